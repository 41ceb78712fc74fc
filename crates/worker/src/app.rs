//! Running a worker: connect, declare its queues, announce itself, consume each of its queues
//! with `basic.qos(prefetch)`, run up to `prefetch` jobs per queue at once, heartbeat. When the
//! broker connection is lost the worker abandons the jobs of that connection (the broker
//! redelivers them), reconnects with back-off, redeclares, announces and consumes again. On
//! shutdown it stops taking jobs, cancels its jobs' contexts, says it is leaving, and drains
//! within the grace period.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, StreamExt};
use lapin::{Channel, Connection, types::ShortString};
use time::OffsetDateTime;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use offload_shared::{
    QueueType, Settings,
    announce::WorkerState,
    broker::{self, Settle},
    control::{ControlMessage, ControlType},
    http_server::{self, HttpLimits},
    kinds::QueueName,
    session::{self, OpenError, Opened},
    settings::DEFAULT_METRICS_ADDR,
    topology,
};

use crate::{
    Job, WorkerError,
    announcer::Announcer,
    cancels::Cancels,
    consumer::JobRunner,
    consumers::{Consumers, Hold, Item},
    gate::{Gate, MAX_WAIT},
    handlers::Registry,
    http::{self, Probe},
    metrics::WorkerMetrics,
    reporter::Reporter,
};

/// One connection's worth of broker state. Given up on as a whole when the connection is lost
/// (closed if it is still open): nothing of it (channels, delivery tags) is reused on the next
/// connection.
struct Session {
    connection: Connection,
    jobs: Channel,
    reporter: Reporter,
    /// The work queues consumed, by queue name.
    work_queues: Vec<String>,
    /// Control messages (cancels) from the API, on this connection's own control queue.
    control: lapin::Consumer,
}

/// How a session ended.
enum SessionEnd {
    /// Shutdown was asked for and the drain is done.
    Stopped,
    /// The connection or a channel was lost.
    Lost(String),
}

/// Sets up a [`Worker`]: the settings it runs with and the [`Job`]s it runs.
///
/// ```no_run
/// use offload_worker::{Settings, Worker, handlers::builtin::{Noop, Sleep}};
///
/// # async fn start() -> Result<(), offload_worker::WorkerError> {
/// let token = offload_worker::shutdown::on_signal();
/// Worker::builder(Settings::load())
///     .job(Noop)
///     .job(Sleep)
///     .build()
///     .await?
///     .run_until_stopped(token)
///     .await
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct WorkerBuilder {
    settings: Settings,
    registry: Registry,
    refused: Option<WorkerError>,
}

impl WorkerBuilder {
    /// Adds `job`'s kind. A job that cannot be run (an invalid kind or queue name, a kind added
    /// twice, a spec that does not compile) makes [`WorkerBuilder::build`] fail, naming it.
    ///
    /// ```
    /// use offload_worker::{Settings, Worker, handlers::builtin::Noop};
    /// let builder = Worker::builder(Settings::from_env().unwrap()).job(Noop);
    /// ```
    pub fn job<J: Job>(mut self, job: J) -> Self {
        if self.refused.is_none()
            && let Err(e) = self.registry.register(job)
        {
            self.refused = Some(e);
        }
        self
    }

    /// Checks the jobs, then connects, declares the topology and the work queues of the jobs'
    /// queues, and binds the metrics endpoint. Refuses invalid jobs before connecting.
    ///
    /// ```
    /// use offload_worker::{Settings, Worker, WorkerError};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let refused = Worker::builder(Settings::from_env().unwrap()).build().await;
    /// assert!(matches!(refused, Err(WorkerError::NoJobs)));
    /// # });
    /// ```
    pub async fn build(self) -> Result<Worker, WorkerError> {
        let WorkerBuilder {
            settings,
            registry,
            refused,
        } = self;
        if let Some(e) = refused {
            return Err(e);
        }
        if registry.is_empty() {
            return Err(WorkerError::NoJobs);
        }
        let worker: Arc<str> = settings.worker_name().into();
        let queues: Arc<[QueueName]> = registry.queues().into();
        let session = open_session(&settings, &worker, &queues, settings.broker_timeout()).await?;
        let listener = bind_metrics(settings.metrics_addr, DEFAULT_METRICS_ADDR).await?;
        let probe = Probe {
            metrics: Arc::new(WorkerMetrics::default()),
            consuming: Arc::new(AtomicBool::new(false)),
        };
        let announcer = Announcer {
            worker: worker.clone(),
            kinds: registry.specs().into(),
            queues,
            prefetch: settings.prefetch,
            heartbeat_s: settings.worker_heartbeat_s,
            started_at: OffsetDateTime::now_utc(),
            metrics: probe.metrics.clone(),
        };
        Ok(Worker {
            settings,
            worker,
            registry: Arc::new(registry),
            session,
            listener,
            probe,
            announcer,
        })
    }
}

/// A built worker, connected and ready to consume: its jobs' queues are declared and its metrics
/// endpoint is bound. [`Worker::run_until_stopped`] runs it.
///
/// ```no_run
/// # async fn start(worker: offload_worker::Worker) -> Result<(), offload_worker::WorkerError> {
/// println!("{} serves metrics on port {}", worker.name(), worker.port());
/// worker.run_until_stopped(offload_worker::shutdown::on_signal()).await
/// # }
/// ```
pub struct Worker {
    settings: Settings,
    worker: Arc<str>,
    registry: Arc<Registry>,
    session: Session,
    listener: TcpListener,
    probe: Probe,
    announcer: Announcer,
}

impl Worker {
    /// A builder of a worker with `settings` (usually `Settings::load()`) and no jobs yet.
    ///
    /// ```
    /// use offload_worker::{Settings, Worker, handlers::builtin::Sleep};
    /// let builder = Worker::builder(Settings::from_env().unwrap()).job(Sleep);
    /// ```
    pub fn builder(settings: Settings) -> WorkerBuilder {
        WorkerBuilder {
            settings,
            registry: Registry::default(),
            refused: None,
        }
    }

    /// The bound metrics address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.settings.metrics_addr_or_default())
    }

    /// The bound metrics port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The worker's name in job status and announcements.
    pub fn name(&self) -> &str {
        &self.worker
    }

    /// Consumes until `token` is cancelled, reconnecting whenever the broker is lost. A
    /// topology mismatch found on reconnection is an error.
    pub async fn run_until_stopped(self, token: CancellationToken) -> Result<(), WorkerError> {
        let Worker {
            settings,
            worker,
            registry,
            session,
            listener,
            probe,
            announcer,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        // The endpoint keeps answering while the jobs drain, and gets what is left of the grace
        // period after them: a stuck client never holds the worker past the grace period.
        let stop_began = tokio::spawn({
            let token = token.clone();
            async move {
                token.cancelled().await;
                Instant::now()
            }
        });
        let server_token = CancellationToken::new();
        let mut server = tokio::spawn(http_server::serve(
            listener,
            http::router(probe.clone()),
            HttpLimits::from_settings(&settings),
            probe.metrics.connections.clone(),
            server_token.clone(),
        ));
        let running = Running {
            settings: &settings,
            registry: &registry,
            probe: &probe,
            announcer: &announcer,
            unknown_kinds: Arc::default(),
            cancels: Arc::default(),
            paused: Arc::default(),
        };
        let mut session = Some(session);
        loop {
            let current = match session.take() {
                Some(s) => s,
                None => match reconnect(&settings, &worker, &announcer.queues, &token).await? {
                    Some(s) => s,
                    None => break,
                },
            };
            match running.consume(current, &token).await {
                SessionEnd::Stopped => break,
                SessionEnd::Lost(why) => {
                    tracing::warn!(reason = %why, "lost the broker; abandoned this connection's jobs to redelivery, reconnecting");
                }
            }
        }
        server_token.cancel();
        let since = match stop_began.now_or_never() {
            Some(Ok(at)) => at,
            // Stopped by an error, not a signal: the endpoint gets the whole grace period.
            _ => Instant::now(),
        };
        let remaining = settings.shutdown_grace().saturating_sub(since.elapsed());
        if tokio::time::timeout(remaining, &mut server).await.is_err() {
            // Dropping the server's task drops its connections.
            server.abort();
            tracing::warn!("metrics endpoint connections cut at the end of the grace period");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Binds the metrics endpoint. An address the operator set (`requested`) is bound as it is, and
/// failing is a start-up error. Unset, `default` is tried first and, when its port is taken
/// (another worker on this machine has it), a free port on the same interface: any number of
/// workers start on one machine with no setting, and the address each one got is logged.
async fn bind_metrics(
    requested: Option<SocketAddr>,
    default: SocketAddr,
) -> Result<TcpListener, WorkerError> {
    let addr = requested.unwrap_or(default);
    let error = match http_server::bind(addr) {
        Ok(listener) => return Ok(listener),
        Err(source) => source,
    };
    if requested.is_some() || error.kind() != std::io::ErrorKind::AddrInUse {
        return Err(WorkerError::Bind {
            addr,
            source: error,
        });
    }
    let free = SocketAddr::new(default.ip(), 0);
    let listener =
        http_server::bind(free).map_err(|source| WorkerError::Bind { addr: free, source })?;
    let bound = listener.local_addr().unwrap_or(free);
    tracing::warn!(
        addr = %bound,
        "metrics and health endpoint on {bound}: OFFLOAD_METRICS_ADDR is not set and {default} is \
         in use (another worker on this machine?); set OFFLOAD_METRICS_ADDR to pin the address"
    );
    Ok(listener)
}

/// Connects, declares the topology and the work queues of `queues`; the session's reports get
/// `report_deadline`.
async fn open_session(
    settings: &Settings,
    worker: &Arc<str>,
    queues: &[QueueName],
    report_deadline: Duration,
) -> Result<Session, WorkerError> {
    let Opened {
        connection,
        names,
        confirms: reports,
        plain: jobs,
    } = session::open(settings, &format!("offload-worker {worker}")).await?;
    let (work_queues, control) = broker::abandon_on_error(&connection, async {
        // Only the queues of this worker's kinds: the API binds kinds to them once it has
        // recorded them from the announcement, and jobs submitted before then wait here.
        let work_queues = topology::declare_work_queues(&connection, settings, queues)
            .await
            .map_err(OpenError::from)?;
        let control = listen_for_control(&jobs, &names, worker, settings.broker_timeout())
            .await
            .map_err(|e| WorkerError::Open(OpenError::unreachable(settings, e)))?;
        Ok::<_, WorkerError>((work_queues, control))
    })
    .await?;
    let limits = offload_shared::frames::MessageLimits::of(&connection, settings);
    let reporter = Reporter::new(reports, &names, worker.clone(), report_deadline, limits);
    Ok(Session {
        connection,
        jobs,
        reporter,
        work_queues,
        control,
    })
}

/// How long a session waits for the API's first repeat of its cancels before it consumes jobs
/// (the API sends one every second).
const CONTROL_SYNC_WAIT: Duration = Duration::from_millis(2500);

/// Declares this connection's control queue (exclusive: deleted with the connection), binds
/// it to the control exchange and consumes it without acks (a control message lost with the
/// connection is repeated by the API). Done before any job is consumed, so a cancel sent from
/// now on is heard before a job it names could be delivered.
async fn listen_for_control(
    channel: &Channel,
    names: &topology::Names,
    worker: &str,
    deadline: Duration,
) -> Result<lapin::Consumer, broker::BrokerError> {
    use lapin::{
        options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
        types::FieldTable,
    };
    let tag = format!("{:08x}", fastrand::u32(..));
    let queue = names.control_queue(worker, &tag);
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    broker::with_deadline(
        deadline,
        "declare the control queue",
        channel.queue_declare(
            ShortString::from(queue.as_str()),
            exclusive,
            FieldTable::default(),
        ),
    )
    .await?;
    broker::with_deadline(
        deadline,
        "bind the control queue",
        channel.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(names.control_exchange.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    broker::with_deadline(
        deadline,
        "consume the control queue",
        channel.basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from(format!("{worker}.control")),
            no_ack,
            FieldTable::default(),
        ),
    )
    .await
}

/// Reconnects with back-off until it works, `token` is cancelled (`None`), or the topology no
/// longer matches (an error an operator must fix).
async fn reconnect(
    settings: &Settings,
    worker: &Arc<str>,
    queues: &[QueueName],
    token: &CancellationToken,
) -> Result<Option<Session>, WorkerError> {
    // The session's reports keep the full deadline; only connecting and declaring are cut.
    let report_deadline = settings.broker_timeout();
    let opened = broker::reconnect(
        settings,
        token,
        |quick| async move { open_session(&quick, worker, queues, report_deadline).await },
        |e: &WorkerError| matches!(e, WorkerError::Open(open) if open.is_fatal()),
    );
    opened.await
}

/// Runs `delivery` of the queue `index` in `running`, remembering its queue for the gate.
fn start(
    running: &mut JoinSet<()>,
    queue_of: &mut HashMap<tokio::task::Id, usize>,
    runner: &JobRunner,
    index: usize,
    delivery: lapin::message::Delivery,
) {
    let task = running.spawn(runner.clone().process(delivery));
    queue_of.insert(task.id(), index);
}

/// A time that never comes, for a timer branch that is disabled.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// What every session of one run shares.
struct Running<'a> {
    settings: &'a Settings,
    registry: &'a Arc<Registry>,
    probe: &'a Probe,
    announcer: &'a Announcer,
    /// Kinds without a handler warned about, across reconnections.
    unknown_kinds: Arc<Mutex<HashSet<offload_shared::JobKind>>>,
    /// Cancels heard, across reconnections.
    cancels: Arc<Cancels>,
    /// The work queues an operator paused, as the API last said; across reconnections.
    paused: Arc<Mutex<HashSet<String>>>,
}

impl Running<'_> {
    /// Runs one session until shutdown or loss of the connection. A lost session's connection
    /// is closed, if it is still open, so its unacknowledged jobs go back to their queues now.
    async fn consume(&self, session: Session, token: &CancellationToken) -> SessionEnd {
        let Session {
            connection,
            jobs,
            reporter,
            work_queues,
            control,
        } = session;
        let end = self
            .run_session(&connection, jobs, reporter, work_queues, control, token)
            .await;
        if matches!(end, SessionEnd::Lost(_)) {
            broker::abandon(&connection).await;
        }
        end
    }

    /// [`Self::consume`] on the session's parts.
    async fn run_session(
        &self,
        connection: &Connection,
        jobs: Channel,
        reporter: Reporter,
        work_queues: Vec<String>,
        mut control: lapin::Consumer,
        token: &CancellationToken,
    ) -> SessionEnd {
        let settings = self.settings;
        let deadline = settings.broker_timeout();
        // Announced before consuming: the API binds this worker's kinds when it reads this.
        self.announcer.send(&reporter, WorkerState::Alive).await;
        // The API repeats the unsettled cancels every second: the first repeat heard tells this
        // worker of every job cancelled while it was away, before it can be delivered one.
        // The repeat also says which queues are paused: wait for one that does (a cancel sent
        // on its own says nothing of pauses; an API that predates them never does).
        let synced_by = tokio::time::Instant::now() + CONTROL_SYNC_WAIT;
        loop {
            match tokio::time::timeout_at(synced_by, control.next()).await {
                Ok(Some(Ok(delivery))) => {
                    if self.control_synced(&delivery.data) {
                        break;
                    }
                }
                Ok(Some(Err(e))) => return SessionEnd::Lost(e.to_string()),
                Ok(None) => {
                    return SessionEnd::Lost("the broker ended the control consumer".to_owned());
                }
                Err(_) => {
                    tracing::info!(
                        "no API repeated its cancels and paused queues within {CONTROL_SYNC_WAIT:?} (is one running?); consuming anyway"
                    );
                    break;
                }
            }
        }
        // Every lane's deliveries flow into one runner, with their queue and priority.
        let mut consumers = match Consumers::start(
            &jobs,
            settings,
            reporter.worker().clone(),
            &work_queues,
        )
        .await
        {
            Ok(consumers) => consumers,
            Err(why) => return SessionEnd::Lost(why),
        };
        // At most `prefetch` jobs of one queue run at once; a high one waiting starts first.
        let slots = usize::from(settings.prefetch);
        // Queues an operator paused are not consumed (a delivery already on its way is handed
        // back).
        for (index, queue) in work_queues.iter().enumerate() {
            if self.is_paused(queue)
                && let Err(why) = consumers.pause(index, deadline).await
            {
                return SessionEnd::Lost(why);
            }
        }
        let mut gate = Gate::new(work_queues.len(), slots, MAX_WAIT);
        let mut queue_of = HashMap::new();
        // Long jobs acknowledged early, by task, with their queue.
        let mut long_jobs: HashMap<tokio::task::Id, usize> = HashMap::new();
        let longs_of = |long_jobs: &HashMap<tokio::task::Id, usize>, index: usize| {
            long_jobs.values().filter(|&&queue| queue == index).count()
        };
        let (holds, mut hold_requests) = tokio::sync::mpsc::unbounded_channel::<Hold>();
        tracing::info!(
            worker = %reporter.worker(),
            queues = ?work_queues,
            prefetch = settings.prefetch,
            "consuming"
        );
        let shutdown = CancellationToken::new();
        let runner = JobRunner {
            registry: self.registry.clone(),
            reporter: reporter.clone(),
            retry: settings.retry_policy(),
            metrics: self.probe.metrics.clone(),
            delivery_limit: (settings.queue_type == QueueType::Quorum)
                .then_some(settings.delivery_limit),
            max_result_bytes: settings.max_result_bytes(),
            max_artifact_bytes: settings.max_artifact_bytes(),
            shutdown: shutdown.clone(),
            unknown_kinds: self.unknown_kinds.clone(),
            cancels: self.cancels.clone(),
            cancel_grace: settings.cancel_grace(),
            progress_interval: settings.progress_interval(),
            lease: settings.lease(),
            holds,
        };

        // Jobs of this session only: dropping the set aborts them, and their deliveries (whose
        // tags belong to this connection) are redelivered by the broker.
        let mut running: JoinSet<()> = JoinSet::new();
        // Heartbeats in flight, aborted with the session.
        let mut beats = JoinSet::new();
        let watched = [&jobs, reporter.channel()];
        let mut lost = pin!(broker::lost(connection, &watched));
        let period = Duration::from_secs(settings.worker_heartbeat_s);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.probe.consuming.store(true, Ordering::Relaxed);
        let end = loop {
            let overdue_at = gate.next_overdue();
            tokio::select! {
                biased;
                () = token.cancelled() => break None,
                () = &mut lost => break Some("the connection or a channel closed".to_owned()),
                Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match ended {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    if let Some(index) = long_jobs.remove(&id)
                        && longs_of(&long_jobs, index) < slots
                        && !self.is_paused(&work_queues[index])
                        && let Err(why) = consumers.resume(index).await
                    {
                        break Some(why);
                    }
                    if let Some(index) = queue_of.remove(&id)
                        && let Some(next) = gate.ended(index)
                    {
                        start(&mut running, &mut queue_of, &runner, index, next);
                    }
                }
                Some(hold) = hold_requests.recv() => {
                    // A long job is about to acknowledge its delivery: if long jobs then fill
                    // every slot of its queue, stop consuming it first.
                    if let Some(&index) = queue_of.get(&hold.task) {
                        long_jobs.insert(hold.task, index);
                        if longs_of(&long_jobs, index) >= slots {
                            if let Err(why) = consumers.pause(index, deadline).await {
                                break Some(why);
                            }
                            // For other workers; not holding a slot here.
                            for waiting in gate.take_waiting_of(index) {
                                running.spawn(runner.clone().hand_back(waiting));
                            }
                        }
                    }
                    let _ = hold.ready.send(());
                }
                () = tokio::time::sleep_until(overdue_at.unwrap_or_else(far_future)), if overdue_at.is_some() => {
                    for (index, delivery) in gate.overdue(tokio::time::Instant::now()) {
                        tracing::debug!(queue = %work_queues[index], "a delivery waited {MAX_WAIT:?} for a slot; starting it over the prefetch");
                        start(&mut running, &mut queue_of, &runner, index, delivery);
                    }
                }
                message = control.next() => match message {
                    Some(Ok(delivery)) => {
                        if !self.control(&delivery.data) {
                            continue;
                        }
                        // The paused queues changed: consume exactly the queues neither an
                        // operator paused nor long jobs fill.
                        let mut failed = None;
                        for (index, queue) in work_queues.iter().enumerate() {
                            let pause = self.is_paused(queue) || longs_of(&long_jobs, index) >= slots;
                            let outcome = if pause && !consumers.is_paused(index) {
                                let paused = consumers.pause(index, deadline).await;
                                // For other workers; not holding a slot here.
                                for waiting in gate.take_waiting_of(index) {
                                    running.spawn(runner.clone().hand_back(waiting));
                                }
                                paused
                            } else if !pause && consumers.is_paused(index) {
                                consumers.resume(index).await
                            } else {
                                Ok(())
                            };
                            if let Err(why) = outcome {
                                failed = Some(why);
                                break;
                            }
                        }
                        if let Some(why) = failed {
                            break Some(why);
                        }
                    }
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break Some("the broker ended the control consumer".to_owned()),
                },
                _ = heartbeat.tick() => {
                    // In its own task: a slow confirm must not hold up deliveries.
                    while beats.try_join_next().is_some() {}
                    let (announcer, reporter) = (self.announcer.clone(), reporter.clone());
                    beats.spawn(async move { announcer.send(&reporter, WorkerState::Alive).await });
                }
                next = consumers.next() => match next {
                    Item::Delivery { index, priority, delivery: Ok(delivery) } => {
                        if consumers.is_paused(index) {
                            // Sent before the cancel took effect: for another worker.
                            running.spawn(runner.clone().hand_back(delivery));
                            continue;
                        }
                        let now = tokio::time::Instant::now();
                        if let Some(delivery) = gate.arrived(index, priority, delivery, now) {
                            start(&mut running, &mut queue_of, &runner, index, delivery);
                        }
                    }
                    Item::Delivery { delivery: Err(e), .. } => break Some(e.to_string()),
                    Item::Ended(tag) if consumers.expected_end(&tag) => {}
                    Item::Ended(_) => break Some("the broker ended a consumer".to_owned()),
                },
            }
        };
        self.probe.consuming.store(false, Ordering::Relaxed);
        if let Some(why) = end {
            return SessionEnd::Lost(why);
        }

        // Shutdown: stop taking jobs; the ones running keep their channel until they finish.
        consumers.cancel_all(deadline).await;
        beats.abort_all();
        // Jobs that were waiting for a slot never started: back to their queues at once, for
        // other workers.
        for waiting in gate.take_waiting() {
            let _ = broker::settle(&waiting.acker, Settle::Requeue, false, deadline).await;
        }
        // The grace period begins: handlers that watch their context may stop early, and their
        // jobs go back to the queue without spending an attempt.
        shutdown.cancel();
        self.announcer.send(&reporter, WorkerState::Leaving).await;
        let grace = settings.shutdown_grace();
        tracing::info!(running = running.len(), ?grace, "draining");
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                unfinished = running.len(),
                "grace period over; unfinished jobs go back to the queue"
            );
            running.abort_all();
        }
        let _ = tokio::time::timeout(
            deadline,
            connection.close(200, "offload-worker shutting down".into()),
        )
        .await;
        SessionEnd::Stopped
    }
}

impl Running<'_> {
    /// Acts on a control message at a session's start; true if it was the API's repeat (it
    /// states the paused queues).
    fn control_synced(&self, body: &[u8]) -> bool {
        self.control(body);
        ControlMessage::from_bytes(body).is_ok_and(|m| m.paused_queues.is_some())
    }

    /// True if an operator paused the work queue `queue`.
    fn is_paused(&self, queue: &str) -> bool {
        self.paused
            .lock()
            .is_ok_and(|paused| paused.contains(queue))
    }

    /// Acts on one control message from the API; one that does not parse is logged and dropped.
    /// True if it changed which queues are paused.
    fn control(&self, body: &[u8]) -> bool {
        match ControlMessage::from_bytes(body) {
            Ok(message) => {
                let changed = match &message.paused_queues {
                    Some(queues) => self.paused.lock().is_ok_and(|mut paused| {
                        let now: HashSet<String> = queues.iter().cloned().collect();
                        let changed = *paused != now;
                        if changed {
                            tracing::info!(paused = ?now, "the paused queues changed");
                        }
                        *paused = now;
                        changed
                    }),
                    None => false,
                };
                self.cancel(&message);
                changed
            }
            Err(why) => {
                tracing::warn!(%why, "dropping a control message that does not parse");
                false
            }
        }
    }

    /// Acts on a control message's cancels.
    fn cancel(&self, message: &ControlMessage) {
        match message.kind {
            ControlType::Cancel if message.job_ids.is_empty() => {}
            ControlType::Cancel => {
                let stopping = self.cancels.heard(&message.job_ids);
                tracing::info!(
                    jobs = message.job_ids.len(),
                    running_here = stopping,
                    by = %message.by,
                    "heard a cancel"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address of this host whose port is held for as long as the listener lives.
    async fn taken() -> (TcpListener, SocketAddr) {
        let holder = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = holder.local_addr().expect("addr");
        (holder, addr)
    }

    #[tokio::test]
    async fn build_refuses_invalid_jobs_before_connecting() {
        use crate::handlers::builtin::{Noop, Sleep};
        struct Shouting;
        impl Job for Shouting {
            const KIND: &'static str = "NOOP";
            type Payload = serde_json::Value;
            type Output = serde_json::Value;
            async fn run(
                &self,
                _ctx: crate::JobContext,
                p: serde_json::Value,
            ) -> Result<serde_json::Value, crate::JobError> {
                Ok(p)
            }
        }
        let mut settings = Settings::from_env().expect("defaults");
        // Nothing listens there: an error about the jobs proves nothing was dialled.
        settings.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned();
        let builder = || Worker::builder(settings.clone());
        let cases = [
            (
                builder().job(Noop).job(Sleep).job(Noop).build().await,
                "\"noop\": registered twice",
            ),
            (
                builder().job(Shouting).build().await,
                "\"NOOP\": kind name \"NOOP\" is not valid",
            ),
            (builder().build().await, "no job kinds registered"),
        ];
        for (outcome, expected) in cases {
            let Err(error) = outcome else {
                panic!("{expected}: built");
            };
            let text = error.to_string();
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    #[tokio::test]
    async fn an_unset_address_uses_the_default_port_when_it_is_free() {
        let (holder, default) = taken().await;
        drop(holder);
        let listener = bind_metrics(None, default).await.expect("binds");
        assert_eq!(listener.local_addr().expect("addr"), default);
    }

    #[tokio::test]
    async fn an_unset_address_falls_back_to_a_free_port_when_the_default_is_taken() {
        let (_holder, default) = taken().await;
        let listener = bind_metrics(None, default).await.expect("falls back");
        let bound = listener.local_addr().expect("addr");
        assert_eq!(bound.ip(), default.ip(), "same interface");
        assert_ne!(bound.port(), default.port());
        assert_ne!(bound.port(), 0);
    }

    #[tokio::test]
    async fn a_set_address_that_is_taken_is_a_start_up_error_naming_the_setting() {
        let (_holder, addr) = taken().await;
        let other_default = SocketAddr::from(([127, 0, 0, 1], 0));
        let error = bind_metrics(Some(addr), other_default)
            .await
            .expect_err("no fallback for a set address");
        let text = error.to_string();
        assert!(
            matches!(error, WorkerError::Bind { addr: a, .. } if a == addr),
            "{text}"
        );
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("OFFLOAD_METRICS_ADDR"), "{text}");
    }
}
