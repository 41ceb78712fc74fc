//! Secrets are never printed: with a distinctive password in OFFLOAD_AMQP_URL,
//! OFFLOAD_DATABASE_URL (PostgreSQL form) and OFFLOAD_MANAGEMENT_URL, neither binary shows it in
//! `--help`, in the error about a malformed or unreachable URL, or in its logs while it starts,
//! serves a job and stops (the worker reading its password from OFFLOAD_AMQP_PASSWORD_FILE).

use std::time::Duration;

use offload_tests::{
    ApiProcess, TestEnv, WorkerProcess, postgres::PgSchema, rabbit_users::RabbitUser, run_binary,
};
use serde_json::json;

/// The password every URL of this test carries.
const PASSWORD: &str = "Zq7-sekret-Hx4pW";

/// Runs a binary to its end (bounded) and returns its exit status and all it printed.
async fn run(
    api: bool,
    args: &[&str],
    vars: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    // Built once per run (may take a while); the run itself is bounded.
    tokio::task::spawn_blocking(|| offload_tests::program("offload-api", false))
        .await
        .expect("build");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_binary(api, &args, &vars)
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the binary exits within 30 s")
        .expect("the binary runs")
}

fn assert_clean(what: &str, output: &str) {
    assert!(!output.trim().is_empty(), "{what} printed nothing");
    assert!(
        !output.contains(PASSWORD),
        "{what} printed the password:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_start_up_errors_never_print_a_password() {
    let amqp = format!("amqp://someone:{PASSWORD}@127.0.0.1:5672/%2f");
    let database = format!("postgres://someone:{PASSWORD}@127.0.0.1:5432/test");
    let management = format!("http://someone:{PASSWORD}@127.0.0.1:15672");
    let secrets = [
        ("OFFLOAD_AMQP_URL", amqp.as_str()),
        ("OFFLOAD_DATABASE_URL", database.as_str()),
        ("OFFLOAD_MANAGEMENT_URL", management.as_str()),
    ];

    // --help of both binaries, with the secrets in the environment.
    for api in [true, false] {
        let (status, output) = run(api, &["--help"], &secrets).await;
        assert!(status.success(), "{output}");
        assert_clean("--help", &output);
        assert!(output.contains("OFFLOAD_AMQP_URL"), "{output}");
    }

    // Malformed URLs: refused, the setting named, the value not shown.
    let bad_port = format!("amqp://someone:{PASSWORD}@127.0.0.1:notaport/%2f");
    let bad_scheme = format!("mysql://someone:{PASSWORD}@127.0.0.1/db");
    let bad_management = format!("ftp://someone:{PASSWORD}@127.0.0.1");
    let cases = [
        (true, "OFFLOAD_AMQP_URL", bad_port.as_str()),
        (false, "OFFLOAD_AMQP_URL", bad_port.as_str()),
        (true, "OFFLOAD_DATABASE_URL", bad_scheme.as_str()),
        (true, "OFFLOAD_MANAGEMENT_URL", bad_management.as_str()),
    ];
    for (api, var, value) in cases {
        let (status, output) = run(
            api,
            &[],
            &[
                (var, value),
                ("OFFLOAD_HTTP_ADDR", "127.0.0.1:0"),
                ("OFFLOAD_METRICS_ADDR", "127.0.0.1:0"),
            ],
        )
        .await;
        assert!(!status.success(), "{var}={value} was accepted: {output}");
        assert_clean(&format!("a malformed {var}"), &output);
        assert!(
            output.contains(var),
            "the error does not name {var}: {output}"
        );
    }

    // A well-formed PostgreSQL URL that cannot be used (bad port number for the server).
    let env = TestEnv::new().await;
    let unusable = format!("postgres://someone:{PASSWORD}@127.0.0.1:1/test");
    let mut vars = env.vars();
    vars.retain(|(k, _)| k != "OFFLOAD_DATABASE_URL");
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("OFFLOAD_DATABASE_URL", unusable.as_str()));
    let (status, output) = run(true, &[], &vars).await;
    assert!(!status.success(), "{output}");
    assert_clean("an unreachable database", &output);

    // An unreachable broker (wrong port), bounded by a short broker timeout.
    let unreachable = format!("amqp://someone:{PASSWORD}@127.0.0.1:1/%2f");
    for api in [true, false] {
        let mut vars = env.vars();
        vars.retain(|(k, _)| k != "OFFLOAD_AMQP_URL");
        let mut vars: Vec<(&str, &str)> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.push(("OFFLOAD_AMQP_URL", unreachable.as_str()));
        vars.push(("OFFLOAD_BROKER_TIMEOUT_MS", "500"));
        let (status, output) = run(api, &[], &vars).await;
        assert!(!status.success(), "{output}");
        assert_clean("an unreachable broker", &output);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_run_with_passwords_in_every_url_never_logs_them() {
    let env = TestEnv::new().await;
    let prefix = regex_escape(&env.prefix);
    let scope = format!("^{prefix}\\.");
    let write = format!("^({prefix}\\..*|amq\\.default)$");
    let user = RabbitUser::create(
        "offload-secrets",
        PASSWORD,
        [&scope, &write, &scope],
        &["management"],
    );
    let schema = PgSchema::create().await;
    let database = schema
        .url
        .replacen("://postgres@", &format!("://postgres:{PASSWORD}@"), 1);
    assert!(database.contains(PASSWORD), "{database}");
    let amqp = user.amqp_url(5672);
    let management = format!("http://{}:{PASSWORD}@127.0.0.1:15672", user.name);
    let vars = [
        ("OFFLOAD_AMQP_URL", amqp.as_str()),
        ("OFFLOAD_DATABASE_URL", database.as_str()),
        ("OFFLOAD_MANAGEMENT_URL", management.as_str()),
        (
            "RUST_LOG",
            "debug,sqlx=debug,lapin=info,hyper=info,reqwest=debug",
        ),
    ];
    let mut api = ApiProcess::start(&env, &vars).await;
    // The worker takes its password from a file instead (OFFLOAD_AMQP_PASSWORD_FILE, as in
    // compose): the URL names only the user.
    let password_file = std::env::temp_dir().join(format!("offload-{}-pw", env.prefix));
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write the password file");
    let password_path = password_file.display().to_string();
    let without_password = format!("amqp://{}@127.0.0.1:5672/%2f", user.name);
    let mut worker = WorkerProcess::start(
        &env,
        "w1",
        1,
        &[
            ("OFFLOAD_AMQP_URL", &without_password),
            ("OFFLOAD_AMQP_PASSWORD_FILE", &password_path),
            vars[3],
        ],
    )
    .await;
    let job = api.submit(json!({"kind": "noop", "payload": {}})).await;
    let id = job["id"].as_str().expect("id");
    api.wait_for_status(id, "succeeded", Duration::from_secs(20))
        .await;
    let _ = api.metrics().await;

    worker.terminate();
    let worker_exit = worker.wait_exit(Duration::from_secs(20)).await;
    api.terminate();
    let api_exit = api.wait_exit(Duration::from_secs(40)).await;
    let api_logs = api.logs();
    let worker_logs = worker.logs();

    assert!(worker_exit.success() && api_exit.success());
    assert_clean("the API's logs", &api_logs.join("\n"));
    assert_clean("the worker's logs", &worker_logs.join("\n"));
    println!(
        "{} API and {} worker log lines, none with the password",
        api_logs.len(),
        worker_logs.len()
    );
    let _ = std::fs::remove_file(&password_file);
    schema.remove().await;
    env.cleanup().await;
    drop(user);
}

/// `text` with the regex metacharacters a queue prefix can hold (`.`) escaped.
fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.")
}
