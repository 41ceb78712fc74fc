//! Slow, idle and stuck clients against the real binaries, over raw TCP: a slowloris and a
//! thousand idle connections neither slow a normal submit nor stay open past the header
//! timeout; a connection past the limit is closed at once; oversized heads get 431; a body
//! that trickles gets 408; and SIGTERM ends both processes within the grace period whatever
//! their clients do.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, metric_sum, poll};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

/// Connections that send their head one byte a second.
const SLOW: usize = 300;
/// Connections that send nothing.
const IDLE: usize = 1000;
/// The header timeout of the slowloris test: short, so the test is (the default is 10 s, which
/// `http_server`'s unit test pins).
const HEADER_TIMEOUT: Duration = Duration::from_secs(4);

/// Raises this test process's soft file-descriptor limit: the slowloris needs 1,300 sockets.
fn enough_file_descriptors() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= 2 * (SLOW + IDLE) as u64,
        "RLIMIT_NOFILE hard limit {limit} is too low for {} sockets; raise it (ulimit -Hn)",
        SLOW + IDLE
    );
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// How one raw connection ended.
#[derive(Debug)]
struct Closed {
    /// From connect to the server closing the connection.
    after: Duration,
    /// Bytes of head the client had sent by then.
    sent: usize,
}

/// Sends a request head one byte a second until the server closes the connection (or `limit`).
async fn slowloris(addr: SocketAddr, connected: Arc<AtomicUsize>, limit: Duration) -> Closed {
    let mut stream = connect(addr).await;
    let opened = Instant::now();
    connected.fetch_add(1, Ordering::SeqCst);
    let head = b"GET /health/live HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    let mut buf = [0u8; 256];
    while opened.elapsed() < limit {
        if sent < head.len() && stream.write_all(&head[sent..=sent]).await.is_err() {
            break;
        }
        sent += 1;
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => panic!(
                "the server answered a half-sent head: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    Closed {
        after: opened.elapsed(),
        sent,
    }
}

/// Connects and sends nothing; returns when the server closes the connection (or `limit`).
async fn idle(addr: SocketAddr, connected: Arc<AtomicUsize>, limit: Duration) -> Closed {
    let mut stream = connect(addr).await;
    let opened = Instant::now();
    connected.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(limit, stream.read(&mut buf)).await;
    Closed {
        after: opened.elapsed(),
        sent: 0,
    }
}

/// Writes `bytes` on a fresh connection and reads the answer until the server closes it.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect(addr).await;
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Starts the API and a worker of `noop`, and waits until the API knows the kind.
async fn api_with_worker(env: &TestEnv, extra: &[(&str, &str)]) -> (ApiProcess, WorkerProcess) {
    let api = ApiProcess::start(env, extra).await;
    let worker = WorkerProcess::start(env, "w1", 1, &[]).await;
    poll(Duration::from_secs(20), "the API to know noop", || async {
        api.kind("noop").await
    })
    .await;
    (api, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_and_a_thousand_idle_connections_leave_submits_fast_and_are_closed_by_the_header_timeout()
 {
    enough_file_descriptors();
    let env = TestEnv::new().await;
    let timeout_ms = HEADER_TIMEOUT.as_millis().to_string();
    let (api, worker) =
        api_with_worker(&env, &[("OFFLOAD_HTTP_HEADER_TIMEOUT_MS", &timeout_ms)]).await;
    let addr = api.addr();
    // A warm client, as a normal one is.
    let (status, _) = api.post_job(&json!({"kind": "noop", "payload": {}})).await;
    assert_eq!(status, 202);

    // Arrange: 300 slow heads and 1,000 idle sockets, all open at once.
    let connected = Arc::new(AtomicUsize::new(0));
    let limit = HEADER_TIMEOUT * 4;
    let mut slow = JoinSet::new();
    let mut idlers = JoinSet::new();
    for _ in 0..SLOW {
        slow.spawn(slowloris(addr, connected.clone(), limit));
    }
    for _ in 0..IDLE {
        idlers.spawn(idle(addr, connected.clone(), limit));
    }
    let opened = Instant::now();
    poll(
        Duration::from_secs(10),
        "every raw connection to open",
        || async { (connected.load(Ordering::SeqCst) == SLOW + IDLE).then_some(()) },
    )
    .await;
    let open_after = opened.elapsed();
    assert!(
        open_after < HEADER_TIMEOUT / 2,
        "opening took {open_after:?}; the submits below would not overlap the held connections"
    );

    // Act: a normal client submits while all of them are held open.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let start = Instant::now();
        let (status, job) = api.post_job(&json!({"kind": "noop", "payload": {}})).await;
        let took = start.elapsed();
        assert_eq!(status, 202, "{job}");
        slowest = slowest.max(took);
    }
    let held = opened.elapsed();
    println!("5 submits beside {SLOW} slow + {IDLE} idle connections: slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a submit took {slowest:?}"
    );
    assert!(
        held < HEADER_TIMEOUT,
        "the submits ended after the header timeout ({held:?}): they did not overlap"
    );

    // Assert: every one of them was closed by the header timeout, the slow ones while still
    // sending a byte a second.
    let deadline = limit + Duration::from_secs(2);
    let slow = tokio::time::timeout(deadline, slow.join_all())
        .await
        .expect("slow clients end");
    let idlers = tokio::time::timeout(deadline, idlers.join_all())
        .await
        .expect("idle clients end");
    // Each side starts its clock at its own end of the handshake: allow some skew.
    let early = HEADER_TIMEOUT - Duration::from_secs(1);
    let late = HEADER_TIMEOUT + Duration::from_secs(3);
    for (what, closed) in slow
        .iter()
        .map(|c| ("slow", c))
        .chain(idlers.iter().map(|c| ("idle", c)))
    {
        assert!(
            closed.after >= early && closed.after <= late,
            "a {what} connection was closed after {:?}, not by the {HEADER_TIMEOUT:?} header \
             timeout",
            closed.after
        );
    }
    let fewest_sent = slow.iter().map(|c| c.sent).min().unwrap_or(0);
    assert!(
        fewest_sent >= 3,
        "slow clients sent only {fewest_sent} bytes"
    );
    let closes = || slow.iter().chain(&idlers).map(|c| c.after);
    println!(
        "all {} raw connections closed between {:?} and {:?} after they opened",
        SLOW + IDLE,
        closes().min(),
        closes().max()
    );

    // The API still serves.
    let (status, _) = api.post_job(&json!({"kind": "noop", "payload": {}})).await;
    assert_eq!(status, 202);
    drop(worker);
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_with_no_request_is_closed_by_the_header_timeout() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[("OFFLOAD_HTTP_HEADER_TIMEOUT_MS", "1500")]).await;
    let mut stream = connect(api.addr()).await;
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.expect("answer");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // The connection is kept alive; with no next request it is closed.
    let answered = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
    let idle_for = answered.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection was not closed"
    );
    assert!(
        idle_for >= Duration::from_millis(1400) && idle_for < Duration::from_secs(4),
        "closed after {idle_for:?}"
    );
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_defaults_a_head_over_16_kib_gets_431_and_a_smaller_one_is_served() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let request = |pad: usize| {
        format!(
            "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        )
    };
    let small = exchange(api.addr(), request(8 * 1024).as_bytes()).await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    let large = exchange(api.addr(), request(20 * 1024).as_bytes()).await;
    assert!(large.starts_with("HTTP/1.1 431"), "{large}");
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_gets_408_problem_json() {
    let env = TestEnv::new().await;
    let (api, worker) = api_with_worker(&env, &[("OFFLOAD_HTTP_BODY_TIMEOUT_MS", "1000")]).await;
    let mut stream = connect(api.addr()).await;
    let head = format!(
        "POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\": \"noop\"",
        api.token
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let took = start.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("/problems/body-timeout"), "{answer}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    drop(worker);
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_is_closed_at_once_counted_and_warned_about_once() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[("OFFLOAD_HTTP_MAX_CONNECTIONS", "20")]).await;
    let addr = api.addr();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(addr).await);
    }
    // Act: ten more connections while twenty are open.
    for _ in 0..10 {
        let mut extra = connect(addr).await;
        let _ = extra
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let start = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a connection past the limit was served: {read:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not closed at once"
        );
    }
    drop(held);
    // Assert: counted, and one warning for the ten.
    let text: String = poll(Duration::from_secs(10), "the metrics to answer", || async {
        let r = api.http.get(api.url("/metrics")).send().await.ok()?;
        r.text().await.ok()
    })
    .await;
    let refused = metric_sum(&text, "offload_http_connections_refused_total", &[]);
    assert_eq!(refused, 10.0, "{text}");
    let warnings = api
        .logs()
        .iter()
        .filter(|l| l.contains("HTTP connection limit reached"))
        .count();
    assert_eq!(warnings, 1, "{:#?}", api.logs());
    drop(api);
    env.cleanup().await;
}

/// Opens a connection that sent half a head and asserts the server is still waiting for it.
async fn stuck_client(addr: SocketAddr, head: &[u8]) -> TcpStream {
    let mut stream = connect(addr).await;
    stream.write_all(head).await.expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "the server did not wait for the rest: {read:?}"
    );
    stream
}

const GRACE_S: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_api_within_the_grace_period_despite_stuck_clients() {
    let env = TestEnv::new().await;
    let grace = GRACE_S.to_string();
    let (mut api, worker) = api_with_worker(&env, &[("OFFLOAD_SHUTDOWN_GRACE_S", &grace)]).await;
    // Arrange: a half-sent head (the default header timeout is 10 s, past the grace) and a
    // request whose body never comes.
    let _head = stuck_client(api.addr(), b"GET /health/live HTTP/1.1\r\nHost").await;
    let body_head = format!(
        "POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\"",
        api.token
    );
    let _body = stuck_client(api.addr(), body_head.as_bytes()).await;
    let (status, _): (u16, Value) = api.post_job(&json!({"kind": "noop", "payload": {}})).await;
    assert_eq!(status, 202);

    // Act
    let start = Instant::now();
    api.terminate();
    let exit = api.wait_exit(Duration::from_secs(GRACE_S + 5)).await;
    let took = start.elapsed();

    // Assert
    println!("API exit after SIGTERM with stuck clients: {took:?} (grace {GRACE_S} s)");
    assert!(exit.success(), "{exit}");
    assert!(
        took <= Duration::from_secs(GRACE_S + 1),
        "the API took {took:?} to exit with a {GRACE_S} s grace period"
    );
    drop(worker);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_worker_within_the_grace_period_despite_a_stuck_metrics_client() {
    let env = TestEnv::new().await;
    let grace = GRACE_S.to_string();
    let mut worker =
        WorkerProcess::start(&env, "w1", 1, &[("OFFLOAD_SHUTDOWN_GRACE_S", &grace)]).await;
    let addr: SocketAddr = worker
        .metrics_base
        .trim_start_matches("http://")
        .parse()
        .expect("metrics address");
    let _head = stuck_client(addr, b"GET /metrics HTTP/1.1\r\nHost").await;

    let start = Instant::now();
    worker.terminate();
    let exit = worker.wait_exit(Duration::from_secs(GRACE_S + 5)).await;
    let took = start.elapsed();

    println!("worker exit after SIGTERM with a stuck client: {took:?} (grace {GRACE_S} s)");
    assert!(exit.success(), "{exit}");
    assert!(
        took <= Duration::from_secs(GRACE_S + 1),
        "the worker took {took:?} to exit with a {GRACE_S} s grace period"
    );
    env.cleanup().await;
}
