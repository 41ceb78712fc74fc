//! The deployment files keep the promises an operator relies on: `deploy/Dockerfile`,
//! `deploy/docker-compose.yml` (with its `postgres` profile), `deploy/docker-compose.cluster.yml`
//! and `deploy/rabbitmq/rabbitmq.conf`. No Docker engine runs on the CI machines, so the files are
//! parsed and their properties asserted; each failure says what is wrong and where.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use yaml_serde::Value;

const COMPOSE: &str = "deploy/docker-compose.yml";
const CLUSTER: &str = "deploy/docker-compose.cluster.yml";
const DOCKERFILE: &str = "deploy/Dockerfile";
const CLUSTER_CONF: &str = "deploy/rabbitmq/rabbitmq.conf";

/// The worker's default drain (`OFFLOAD_SHUTDOWN_GRACE_S`): `stop_grace_period` must exceed it.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[test]
fn rabbitmq_is_a_pinned_4x_management_image_with_a_healthcheck_and_a_named_volume() {
    let compose = Compose::load(COMPOSE);
    let rabbitmq = compose.service("rabbitmq");
    compose.assert_rabbitmq_node("rabbitmq", rabbitmq);
    let published: Vec<u16> = ports(rabbitmq).iter().map(|p| p.target).collect();
    for port in [5672, 15672] {
        assert!(
            published.contains(&port),
            "{COMPOSE}: rabbitmq must publish port {port} (it publishes {published:?})"
        );
    }
}

#[test]
fn the_api_publishes_8080_keeps_its_store_on_a_volume_and_checks_itself() {
    let compose = Compose::load(COMPOSE);
    let api = compose.service("api");
    assert_eq!(
        first_word(&command(api)),
        "offload-api",
        "{COMPOSE}: service api must run offload-api"
    );
    assert!(
        ports(api)
            .iter()
            .any(|p| p.target == 8080 && p.published.as_deref() == Some("8080")),
        "{COMPOSE}: api must publish 8080:8080 (it has {:?})",
        ports(api)
    );
    let volume = named_volume_on(api, "/data").unwrap_or_else(|| {
        panic!("{COMPOSE}: api needs a named volume on /data for its SQLite file")
    });
    compose.assert_volume_declared("api", &volume);
    let database = env(api).get("OFFLOAD_DATABASE_URL").cloned();
    assert!(
        database
            .as_deref()
            .is_none_or(|url| url.starts_with("sqlite:///data/")),
        "{COMPOSE}: api's OFFLOAD_DATABASE_URL {database:?} must be a SQLite file on the /data volume"
    );
    let build = &api["build"];
    assert_eq!(
        (build["context"].as_str(), build["dockerfile"].as_str()),
        (Some(".."), Some("deploy/Dockerfile")),
        "{COMPOSE}: api must be built from deploy/Dockerfile with the repository root as context"
    );
}

#[test]
fn every_api_and_worker_checks_itself_restarts_and_reaches_a_broker_of_its_file() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        let brokers = compose.rabbitmq_services();
        let apps = compose.offload_services();
        assert!(
            apps.iter()
                .any(|(_, s)| first_word(&command(s)) == "offload-api")
                && apps
                    .iter()
                    .any(|(_, s)| first_word(&command(s)) == "offload-worker"),
            "{file}: needs a service running offload-api and one running offload-worker"
        );
        for (name, service) in apps {
            let line = command(service);
            let binary = first_word(&line);
            let check = healthcheck(service).unwrap_or_default();
            assert!(
                check.contains(&format!("{binary} healthcheck")),
                "{file}: service {name} must have the healthcheck `{binary} healthcheck` (it has {check:?})"
            );
            assert!(
                service["restart"].as_str().is_some_and(|r| r != "no"),
                "{file}: service {name} needs a restart policy (unless-stopped, always, on-failure)"
            );
            let url = env(service)
                .get("OFFLOAD_AMQP_URL")
                .cloned()
                .unwrap_or_else(|| panic!("{file}: service {name} must set OFFLOAD_AMQP_URL"));
            // One address, or a list of the cluster's nodes: each a RabbitMQ service.
            for address in url.split(',') {
                assert!(
                    brokers.contains(&url_host(address.trim()).to_owned()),
                    "{file}: service {name}'s OFFLOAD_AMQP_URL {url} must point at RabbitMQ services {brokers:?}"
                );
            }
            if file == CLUSTER {
                assert_eq!(
                    url.split(',').count(),
                    3,
                    "{file}: service {name}'s OFFLOAD_AMQP_URL must list all three nodes, so it \
                     fails over when one is lost"
                );
            }
        }
    }
}

#[test]
fn workers_publish_no_ports_scale_out_and_outlast_their_drain() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        let workers: Vec<_> = compose
            .offload_services()
            .into_iter()
            .filter(|(_, s)| first_word(&command(s)) == "offload-worker")
            .collect();
        assert!(
            workers.iter().any(|(name, _)| *name == "worker"),
            "{file}: needs a service named worker running offload-worker"
        );
        for (name, worker) in workers {
            assert!(
                ports(worker).is_empty(),
                "{file}: worker service {name} must publish no ports (it publishes {:?})",
                ports(worker)
            );
            assert!(
                replicas(worker) >= 2,
                "{file}: worker service {name} must run at least 2 replicas (deploy.replicas), has {}",
                replicas(worker)
            );
            assert!(
                worker.get("container_name").is_none(),
                "{file}: worker service {name} must not set container_name: replicas and --scale need generated names"
            );
            let vars = env(worker);
            assert!(
                !vars.contains_key("OFFLOAD_WORKER_NAME"),
                "{file}: worker service {name} must leave OFFLOAD_WORKER_NAME unset so each replica gets its own <hostname>-<pid>"
            );
            let drain = vars
                .get("OFFLOAD_SHUTDOWN_GRACE_S")
                .map(|s| {
                    Duration::from_secs(s.parse().unwrap_or_else(|_| {
                        panic!("{file}: {name}: OFFLOAD_SHUTDOWN_GRACE_S {s:?} is not a number")
                    }))
                })
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
            let grace = worker["stop_grace_period"].as_str().unwrap_or_else(|| {
                panic!("{file}: worker service {name} needs stop_grace_period longer than its {drain:?} drain (Docker's default is 10 s)")
            });
            let grace_time = parse_duration(grace).unwrap_or_else(|| {
                panic!("{file}: {name}: stop_grace_period {grace:?} does not parse")
            });
            assert!(
                grace_time > drain,
                "{file}: worker service {name}'s stop_grace_period {grace} must be longer than its drain ({drain:?}), or Docker kills running jobs"
            );
        }
    }
}

#[test]
fn every_dependency_waits_for_a_healthy_target_in_the_same_profile() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        for (name, service) in compose.services() {
            for (target, condition) in depends_on(service) {
                let dependency = compose.service(&target);
                // A one-shot (the `secrets` service) is waited for until it has completed.
                let one_shot = dependency["restart"].as_str() == Some("no");
                let wanted = if one_shot {
                    "service_completed_successfully"
                } else {
                    "service_healthy"
                };
                assert_eq!(
                    condition.as_deref(),
                    Some(wanted),
                    "{file}: {name} depends on {target} without `condition: {wanted}`"
                );
                assert!(
                    one_shot || healthcheck(dependency).is_some(),
                    "{file}: {name} waits for {target} to be healthy, but {target} has no healthcheck"
                );
                let theirs = profiles(dependency);
                assert!(
                    theirs.is_empty() || profiles(service).iter().any(|p| theirs.contains(p)),
                    "{file}: {name} depends on {target}, which only starts with profile(s) {theirs:?}: a plain `up` would fail"
                );
            }
        }
    }
}

#[test]
fn the_postgres_profile_runs_two_api_replicas_on_postgresql() {
    let compose = Compose::load(COMPOSE);
    let in_profile: Vec<_> = compose
        .services()
        .into_iter()
        .filter(|(_, s)| profiles(s).iter().any(|p| p == "postgres"))
        .collect();
    let (db_name, db) = in_profile
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("postgres:"))
        })
        .unwrap_or_else(|| {
            panic!("{COMPOSE}: profile postgres needs a service with the official postgres image")
        });
    let image = db["image"].as_str().unwrap_or_default();
    let version = pinned_version(image)
        .unwrap_or_else(|| panic!("{COMPOSE}: {db_name}'s image {image} must be pinned to a full version (e.g. postgres:17.6-bookworm)"));
    assert!(
        version.len() >= 2,
        "{COMPOSE}: {db_name}'s image {image} must name major and minor version"
    );
    let check = healthcheck(db).unwrap_or_default();
    assert!(
        check.contains("pg_isready"),
        "{COMPOSE}: {db_name} needs a pg_isready healthcheck (it has {check:?})"
    );
    let volume = named_volume_on(db, "/var/lib/postgresql/data").unwrap_or_else(|| {
        panic!("{COMPOSE}: {db_name} needs a named volume on /var/lib/postgresql/data")
    });
    compose.assert_volume_declared(db_name, &volume);

    let (api_name, api) = in_profile
        .iter()
        .find(|(_, s)| first_word(&command(s)) == "offload-api")
        .unwrap_or_else(|| {
            panic!("{COMPOSE}: profile postgres needs a service running offload-api")
        });
    assert!(
        replicas(api) >= 2,
        "{COMPOSE}: {api_name} must run at least 2 API replicas, has {}",
        replicas(api)
    );
    let url = env(api)
        .get("OFFLOAD_DATABASE_URL")
        .cloned()
        .unwrap_or_default();
    assert!(
        url.starts_with("postgres://") && url_host(&url) == *db_name,
        "{COMPOSE}: {api_name}'s OFFLOAD_DATABASE_URL {url:?} must be postgres:// on service {db_name}"
    );
    let hosts: Vec<u16> = ports(api)
        .iter()
        .filter(|p| p.target == 8080)
        .flat_map(|p| host_port_range(p.published.as_deref().unwrap_or_default()))
        .collect();
    assert!(
        hosts.len() as u64 >= replicas(api),
        "{COMPOSE}: {api_name} needs a published port range with one host port per replica (it has {:?})",
        ports(api)
    );
    let taken: Vec<u16> = compose
        .services()
        .iter()
        .filter(|(name, _)| name != api_name)
        .flat_map(|(_, s)| ports(s))
        .flat_map(|p| host_port_range(p.published.as_deref().unwrap_or_default()))
        .collect();
    assert!(
        hosts.iter().all(|h| !taken.contains(h)),
        "{COMPOSE}: {api_name}'s host ports {hosts:?} clash with another service's {taken:?}"
    );
}

/// The per-queue worker services and the queue each serves (`OFFLOAD_QUEUES`).
const QUEUE_WORKERS: [(&str, &str); 4] = [
    ("worker", "default"),
    ("thumbnails", "thumbnails"),
    ("documents", "documents"),
    ("webhooks", "webhooks"),
];

#[test]
fn each_queue_has_its_own_worker_service_set_up_like_the_default_one() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        let default = compose.service("worker");
        let mut default_env = env(default);
        default_env.remove("OFFLOAD_QUEUES");
        for (name, queue) in QUEUE_WORKERS {
            let service = compose.service(name);
            assert_eq!(
                first_word(&command(service)),
                "offload-worker",
                "{file}: service {name} must run offload-worker"
            );
            let mut vars = env(service);
            assert_eq!(
                vars.remove("OFFLOAD_QUEUES").as_deref(),
                Some(queue),
                "{file}: service {name} must set OFFLOAD_QUEUES: {queue}"
            );
            assert_eq!(
                vars, default_env,
                "{file}: service {name} must have the settings of service worker besides OFFLOAD_QUEUES"
            );
            for key in [
                "image",
                "healthcheck",
                "stop_grace_period",
                "volumes",
                "depends_on",
            ] {
                assert_eq!(
                    service.get(key),
                    default.get(key),
                    "{file}: service {name} must have the {key} of service worker"
                );
            }
            assert!(
                profiles(service).is_empty(),
                "{file}: service {name} must run without a profile"
            );
        }
        // Every built-in kind's queue has a worker service: no built-in job waits forever.
        for queue in offload_worker::handlers::builtin::queues() {
            assert!(
                QUEUE_WORKERS.iter().any(|(_, q)| *q == queue),
                "{file}: no worker service serves the built-in queue {queue}; add one to QUEUE_WORKERS and the compose files"
            );
        }
    }
}

#[test]
fn each_store_has_its_own_queue_prefix_and_each_prefix_has_workers() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        let prefix = |s: &Value| {
            env(s)
                .get("OFFLOAD_QUEUE_PREFIX")
                .cloned()
                .unwrap_or_else(|| "offload".to_owned())
        };
        let mut stores: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut worker_prefixes = BTreeSet::new();
        for (_, service) in compose.offload_services() {
            match first_word(&command(service)) {
                "offload-api" => {
                    let store = env(service)
                        .get("OFFLOAD_DATABASE_URL")
                        .cloned()
                        .unwrap_or_default();
                    stores.entry(prefix(service)).or_default().insert(store);
                }
                _ => {
                    worker_prefixes.insert(prefix(service));
                }
            }
        }
        for (queue_prefix, urls) in &stores {
            // Each API consumes its prefix's lifecycle events into its store: two stores on one
            // prefix would each see only part of the events.
            assert_eq!(
                urls.len(),
                1,
                "{file}: APIs with different stores {urls:?} share the queue prefix {queue_prefix}; give each store its own OFFLOAD_QUEUE_PREFIX"
            );
            assert!(
                worker_prefixes.contains(queue_prefix),
                "{file}: no worker consumes the queue prefix {queue_prefix}: its jobs would never run"
            );
        }
    }
}

#[test]
fn the_cluster_file_has_three_rabbit_nodes_and_quorum_queues() {
    let compose = Compose::load(CLUSTER);
    let nodes = compose.rabbitmq_services();
    assert_eq!(
        nodes.len(),
        3,
        "{CLUSTER}: needs exactly 3 RabbitMQ nodes, has {nodes:?}"
    );
    let conf = read(CLUSTER_CONF);
    let settings: BTreeMap<&str, &str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    assert_eq!(
        settings.get("cluster_formation.peer_discovery_backend"),
        Some(&"classic_config"),
        "{CLUSTER_CONF}: peer discovery must be classic_config"
    );
    let listed: BTreeSet<&str> = settings
        .iter()
        .filter(|(k, _)| k.starts_with("cluster_formation.classic_config.nodes."))
        .map(|(_, v)| *v)
        .collect();

    let mut hostnames = BTreeSet::new();
    let mut cookies = BTreeSet::new();
    for name in &nodes {
        let node = compose.service(name);
        compose.assert_rabbitmq_node(name, node);
        let hostname = node["hostname"].as_str().unwrap_or_default();
        hostnames.insert(hostname);
        assert!(
            listed.contains(format!("rabbit@{hostname}").as_str()),
            "{CLUSTER_CONF}: node rabbit@{hostname} (service {name}) is missing from classic_config.nodes {listed:?}"
        );
        // The cookie comes from the secrets volume, never from the file.
        let start = command(node);
        assert!(
            start.contains("/secrets/erlang-cookie")
                && start.contains("/var/lib/rabbitmq/.erlang.cookie"),
            "{CLUSTER}: {name} must copy its Erlang cookie from /secrets/erlang-cookie (has {start:?})"
        );
        assert!(
            named_volume_on(node, "/secrets").as_deref() == Some("secrets"),
            "{CLUSTER}: {name} must mount the secrets volume on /secrets"
        );
        cookies.insert("/secrets/erlang-cookie".to_owned());
        let conf_mounted = volume_entries(node).iter().any(|(source, target)| {
            source.ends_with("rabbitmq/rabbitmq.conf") && target.starts_with("/etc/rabbitmq/")
        });
        assert!(
            conf_mounted,
            "{CLUSTER}: {name} must mount ./rabbitmq/rabbitmq.conf under /etc/rabbitmq/"
        );
    }
    assert_eq!(
        hostnames.len(),
        3,
        "{CLUSTER}: the nodes need three distinct hostnames (node names), have {hostnames:?}"
    );
    assert!(
        cookies.len() == 1 && cookies.iter().all(|c| !c.is_empty()),
        "{CLUSTER}: all nodes must share one non-empty RABBITMQ_ERLANG_COOKIE (have {} distinct)",
        cookies.len()
    );

    for (name, app) in compose.offload_services() {
        assert_eq!(
            env(app).get("OFFLOAD_QUEUE_TYPE").map(String::as_str),
            Some("quorum"),
            "{CLUSTER}: {name} must set OFFLOAD_QUEUE_TYPE=quorum"
        );
        let waits_for: BTreeSet<String> = depends_on(app).into_iter().map(|(t, _)| t).collect();
        for node in &nodes {
            assert!(
                waits_for.contains(node),
                "{CLUSTER}: {name} must wait for {node} too, or its queues may be declared with fewer than 3 members"
            );
        }
    }
}

/// Names of settings whose value is a credential.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    ["PASSWORD", "PASS", "COOKIE", "SECRET", "TOKEN"]
        .iter()
        .any(|word| key.split('_').any(|part| part == *word))
        && !key.ends_with("_FILE")
}

#[test]
fn no_compose_file_holds_a_password_or_cookie() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        let text = read(file);
        // A URL with a password in it: scheme://user:password@host.
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((_, rest)) = line.split_once("://") {
                let authority = rest.split(['/', ' ', '"']).next().unwrap_or_default();
                assert!(
                    !authority
                        .split_once('@')
                        .is_some_and(|(userinfo, _)| userinfo.contains(':')),
                    "{file}: a URL with a password: {line:?}; use OFFLOAD_*_PASSWORD_FILE"
                );
            }
        }
        for (name, service) in compose.services() {
            for (key, value) in env(service) {
                let from_environment = value.is_empty() || value.starts_with("${");
                assert!(
                    !is_secret_key(&key) || from_environment,
                    "{file}: {name} sets {key} to a fixed value; take it from the environment \
                     (${{{key}:-}}) or a file (*_FILE) in the secrets volume"
                );
            }
        }
        // Where the secrets come from: a one-shot that generates what the environment lacks.
        let secrets = compose.service("secrets");
        let script = command(secrets);
        assert!(
            secrets["restart"].as_str() == Some("no") && script.contains("/dev/urandom"),
            "{file}: the secrets service must be a one-shot generating random values"
        );
        assert!(
            named_volume_on(secrets, "/secrets").as_deref() == Some("secrets"),
            "{file}: the secrets service must write the named volume `secrets`"
        );
        compose.assert_volume_declared("secrets", "secrets");
        for (name, service) in compose.offload_services() {
            let vars = env(service);
            assert!(
                vars.get("OFFLOAD_AMQP_PASSWORD_FILE")
                    .is_some_and(|f| f.starts_with("/secrets/")),
                "{file}: {name} must read its broker password from /secrets (OFFLOAD_AMQP_PASSWORD_FILE)"
            );
            assert!(
                named_volume_on(service, "/secrets").as_deref() == Some("secrets"),
                "{file}: {name} must mount the secrets volume on /secrets"
            );
        }
    }
    assert!(is_secret_key("POSTGRES_PASSWORD") && !is_secret_key("POSTGRES_PASSWORD_FILE"));
}

/// A limit as a number, or as `${VARIABLE:-default}` (its default).
fn limit(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s
            .strip_prefix("${")?
            .strip_suffix('}')?
            .split_once(":-")?
            .1
            .parse()
            .ok(),
        _ => None,
    }
}

#[test]
fn every_api_and_worker_may_hold_many_connections() {
    for compose in [Compose::load(COMPOSE), Compose::load(CLUSTER)] {
        let file = compose.file;
        for (name, service) in compose.offload_services() {
            let nofile = &service["ulimits"]["nofile"];
            let (soft, hard) = match nofile {
                Value::Number(n) => (n.as_u64(), n.as_u64()),
                _ => (limit(&nofile["soft"]), limit(&nofile["hard"])),
            };
            assert!(
                soft.is_some_and(|s| s >= 65536) && hard.is_some_and(|h| h >= 65536),
                "{file}: {name} needs `ulimits: nofile` of at least 65536 (has {nofile:?}): each \
                 connection is a file descriptor"
            );
        }
    }
}

#[test]
fn the_dockerfile_is_multi_stage_cached_non_root_and_curl_free() {
    let text = read(DOCKERFILE);
    let instructions = dockerfile_instructions(&text);
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, args)| args.as_str())
        .collect();
    assert!(
        stages.len() >= 2,
        "{DOCKERFILE}: must be a multi-stage build (has {} FROM)",
        stages.len()
    );
    let stage_names: Vec<&str> = stages
        .iter()
        .filter_map(|args| args.split_whitespace().collect::<Vec<_>>().get(2).copied())
        .collect();
    for args in &stages {
        let image = args.split_whitespace().next().unwrap_or_default();
        if stage_names.contains(&image) {
            continue;
        }
        assert!(
            pinned_version(image).is_some_and(|v| v.len() >= 2),
            "{DOCKERFILE}: base image {image} must be pinned to a version tag (not latest, not a bare codename)"
        );
    }
    let runtime = stages.last().copied().unwrap_or_default();
    assert!(
        runtime.starts_with("debian:"),
        "{DOCKERFILE}: the runtime stage must be Debian slim, is {runtime}"
    );

    let runs: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, args)| args.as_str())
        .collect();
    let position = |needle: &str| runs.iter().position(|r| r.contains(needle));
    assert!(
        runs.iter()
            .any(|r| r.contains("cargo install cargo-chef") && r.contains("--locked")),
        "{DOCKERFILE}: must install cargo-chef with `cargo install cargo-chef --locked`"
    );
    assert!(
        position("cargo chef prepare").is_some(),
        "{DOCKERFILE}: must plan the dependency recipe with `cargo chef prepare`"
    );
    let cook = position("cargo chef cook").unwrap_or_else(|| {
        panic!("{DOCKERFILE}: must cook the dependencies with `cargo chef cook`")
    });
    let build = runs
        .iter()
        .position(|r| {
            r.contains("cargo build") && r.contains("--release") && r.contains("--locked")
        })
        .unwrap_or_else(|| panic!("{DOCKERFILE}: must run `cargo build --release --locked`"));
    assert!(
        cook < build,
        "{DOCKERFILE}: the dependencies must be cooked before the workspace is built"
    );
    for binary in ["offload-api", "offload-worker"] {
        assert!(
            runs[build].contains(&format!("-p {binary}")),
            "{DOCKERFILE}: the build must include -p {binary}"
        );
        assert!(
            instructions.iter().any(|(op, args)| op == "COPY"
                && args.contains(binary)
                && args.trim_end().ends_with("/usr/local/bin/")),
            "{DOCKERFILE}: {binary} must be copied into /usr/local/bin/"
        );
    }

    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap_or_default();
    let user = instructions
        .iter()
        .rposition(|(op, _)| op == "USER")
        .filter(|at| *at > last_from)
        .map(|at| instructions[at].1.clone())
        .unwrap_or_else(|| {
            panic!("{DOCKERFILE}: the runtime stage must switch to a non-root USER")
        });
    let user_name = user.split(':').next().unwrap_or_default();
    assert!(
        !["root", "0"].contains(&user_name),
        "{DOCKERFILE}: the final USER must not be root (is {user})"
    );

    let curl_lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.contains("curl") || l.contains("wget"))
        .collect();
    assert!(
        curl_lines.is_empty(),
        "{DOCKERFILE}: the image must install no curl or wget (healthchecks use the binaries): {curl_lines:?}"
    );
    let exposed: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, args)| args.split_whitespace())
        .collect();
    for port in ["8080", "9090"] {
        assert!(
            exposed.contains(&port),
            "{DOCKERFILE}: must EXPOSE {port} (exposes {exposed:?})"
        );
    }
    let envs: String = instructions
        .iter()
        .filter(|(op, _)| op == "ENV")
        .map(|(_, args)| args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for setting in [
        "OFFLOAD_LOG_FORMAT=json",
        "OFFLOAD_DATABASE_URL=sqlite:///data/",
    ] {
        assert!(
            envs.contains(setting),
            "{DOCKERFILE}: the runtime stage must set {setting}…"
        );
    }

    let ignored = read(".dockerignore");
    for entry in ["target", ".git", "data"] {
        assert!(
            ignored
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == entry),
            ".dockerignore must exclude {entry}/ from the build context"
        );
    }
}

#[test]
fn the_helpers_read_compose_syntax() {
    for (text, expected) in [
        ("45s", Some(45_000)),
        ("1m30s", Some(90_000)),
        ("1.5s", Some(1_500)),
        ("2m", Some(120_000)),
        ("500ms", Some(500)),
        ("1h", Some(3_600_000)),
        ("45", None),
        ("soon", None),
        ("", None),
    ] {
        assert_eq!(
            parse_duration(text).map(|d| d.as_millis()),
            expected,
            "duration {text:?}"
        );
    }
    let short: Value = yaml_serde::from_str(
        r#"ports: ["8080:8080", "127.0.0.1:5672:5672/tcp", "8081-8082:8080", "9000", {target: 80, published: "8000"}]"#,
    )
    .expect("valid YAML");
    let parsed = ports(&short);
    let targets: Vec<u16> = parsed.iter().map(|p| p.target).collect();
    assert_eq!(
        targets,
        [8080, 5672, 8080, 9000, 80],
        "targets of {parsed:?}"
    );
    assert_eq!(host_port_range("8081-8082"), [8081, 8082]);
    assert_eq!(host_port_range("8080"), [8080]);
    assert_eq!(url_host("amqp://guest:guest@rabbit1:5672/%2f"), "rabbit1");
    assert_eq!(url_host("postgres://a:b@postgres/offload"), "postgres");
    assert_eq!(
        pinned_version("rabbitmq:4.1.6-management"),
        Some(vec![4, 1, 6])
    );
    assert_eq!(pinned_version("rabbitmq:latest"), None);
    assert_eq!(pinned_version("debian:bookworm-slim"), None);
    assert_eq!(pinned_version("postgres"), None);
}

// ---------------------------------------------------------------------------------------------
// Reading the files.

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// A parsed compose file, with YAML merge keys (`<<: *anchor`) applied as Compose does.
struct Compose {
    file: &'static str,
    doc: Value,
}

impl Compose {
    fn load(file: &'static str) -> Self {
        let mut doc: Value = yaml_serde::from_str(&read(file))
            .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        doc.apply_merge()
            .unwrap_or_else(|e| panic!("{file}: a merge key (<<) does not apply: {e}"));
        assert!(
            doc.get("version").is_none(),
            "{file}: drop the obsolete top-level `version:` key (Compose specification)"
        );
        Compose { file, doc }
    }

    fn services(&self) -> Vec<(String, &Value)> {
        self.doc["services"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{}: no `services:` mapping", self.file))
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v))
            .collect()
    }

    fn service(&self, name: &str) -> &Value {
        self.doc["services"]
            .get(name)
            .unwrap_or_else(|| panic!("{}: no service named {name}", self.file))
    }

    /// Services running the official RabbitMQ image.
    fn rabbitmq_services(&self) -> Vec<String> {
        self.services()
            .into_iter()
            .filter(|(_, s)| {
                s["image"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("rabbitmq:"))
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// Services running one of our binaries.
    fn offload_services(&self) -> Vec<(String, &Value)> {
        self.services()
            .into_iter()
            .filter(|(_, s)| first_word(&command(s)).starts_with("offload-"))
            .collect()
    }

    fn assert_volume_declared(&self, service: &str, volume: &str) {
        assert!(
            self.doc["volumes"]
                .as_mapping()
                .is_some_and(|m| m.contains_key(volume)),
            "{}: {service} mounts the named volume {volume}, which is missing from the top-level `volumes:`",
            self.file
        );
    }

    fn assert_rabbitmq_node(&self, name: &str, node: &Value) {
        let file = self.file;
        let image = node["image"].as_str().unwrap_or_default();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        let version = pinned_version(image);
        assert!(
            version.as_ref().is_some_and(|v| v.len() == 3 && v[0] == 4)
                && tag.contains("management"),
            "{file}: {name}'s image {image:?} must be RabbitMQ 4.x management pinned to a full version (e.g. rabbitmq:4.1.6-management)"
        );
        let check = healthcheck(node).unwrap_or_default();
        assert!(
            check.contains("rabbitmq-diagnostics"),
            "{file}: {name} needs a rabbitmq-diagnostics healthcheck (it has {check:?})"
        );
        let volume = named_volume_on(node, "/var/lib/rabbitmq").unwrap_or_else(|| {
            panic!(
                "{file}: {name} needs a named volume on /var/lib/rabbitmq so queues survive down/up"
            )
        });
        self.assert_volume_declared(name, &volume);
        assert!(
            node["hostname"].as_str().is_some_and(|h| !h.is_empty()),
            "{file}: {name} needs a fixed hostname: RabbitMQ keeps its data per node name (rabbit@<hostname>)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reading one service.

/// The service's command as one line (`command:` may be a string or a list).
fn command(service: &Value) -> String {
    match &service["command"] {
        Value::String(s) => s.clone(),
        Value::Sequence(words) => words
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}

/// The healthcheck command as one line, or `None` without an enabled healthcheck.
fn healthcheck(service: &Value) -> Option<String> {
    let check = service.get("healthcheck")?;
    if check["disable"].as_bool() == Some(true) {
        return None;
    }
    match &check["test"] {
        Value::String(s) => Some(s.clone()),
        Value::Sequence(words) => {
            let words: Vec<&str> = words.iter().filter_map(Value::as_str).collect();
            match words.split_first() {
                Some((&"CMD" | &"CMD-SHELL", rest)) if !rest.is_empty() => Some(rest.join(" ")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Environment variables, from either the mapping or the `KEY=value` list form.
fn env(service: &Value) -> BTreeMap<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    match &service["environment"] {
        Value::Mapping(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v))))
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[derive(Debug)]
struct Port {
    /// Host side as written (`8080`, `8081-8082`), `None` for an ephemeral host port.
    published: Option<String>,
    /// Container port.
    target: u16,
}

/// Published ports in short (`[ip:]host:container[/proto]`) or long (`target:`) syntax.
fn ports(service: &Value) -> Vec<Port> {
    let Some(entries) = service["ports"].as_sequence() else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|entry| match entry {
            Value::Mapping(_) => Port {
                published: match &entry["published"] {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                },
                target: entry["target"]
                    .as_u64()
                    .and_then(|t| u16::try_from(t).ok())
                    .unwrap_or(0),
            },
            other => {
                let text = match other {
                    Value::Number(n) => n.to_string(),
                    _ => other.as_str().unwrap_or_default().to_owned(),
                };
                let text = text.split('/').next().unwrap_or_default();
                let parts: Vec<&str> = text.split(':').collect();
                let target = parts
                    .last()
                    .and_then(|t| t.split('-').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let published = (parts.len() >= 2).then(|| parts[parts.len() - 2].to_owned());
                Port { published, target }
            }
        })
        .collect()
}

/// Host ports of `8080` or a range `8081-8082`.
fn host_port_range(published: &str) -> Vec<u16> {
    let (low, high) = published.split_once('-').unwrap_or((published, published));
    match (low.parse::<u16>(), high.parse::<u16>()) {
        (Ok(low), Ok(high)) => (low..=high).collect(),
        _ => Vec::new(),
    }
}

/// `(source, target)` of every mount, short or long syntax.
fn volume_entries(service: &Value) -> Vec<(String, String)> {
    let Some(entries) = service["volumes"].as_sequence() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::String(short) => {
                let mut parts = short.split(':');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            }
            Value::Mapping(_) => Some((
                entry["source"].as_str()?.to_owned(),
                entry["target"].as_str()?.to_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// The named volume (not a bind mount) mounted on `target`.
fn named_volume_on(service: &Value, target: &str) -> Option<String> {
    volume_entries(service)
        .into_iter()
        .find(|(source, to)| {
            to.trim_end_matches('/') == target
                && !source.is_empty()
                && !source.starts_with(['.', '/', '~', '$'])
        })
        .map(|(source, _)| source)
}

/// `deploy.replicas` (or the older `scale`), 1 when unset.
fn replicas(service: &Value) -> u64 {
    service["deploy"]["replicas"]
        .as_u64()
        .or_else(|| service["scale"].as_u64())
        .unwrap_or(1)
}

fn profiles(service: &Value) -> Vec<String> {
    service["profiles"]
        .as_sequence()
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `(target, condition)` of each dependency; the list form has no condition.
fn depends_on(service: &Value) -> Vec<(String, Option<String>)> {
    match &service["depends_on"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap_or_default().to_owned(),
                    v["condition"].as_str().map(str::to_owned),
                )
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|t| (t.as_str().unwrap_or_default().to_owned(), None))
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Small parsers.

/// A Compose duration such as `45s`, `1m30s`, `1.5s` or `500ms`; a unit is required.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The numeric version at the start of an image's tag (`4.1.6` of `rabbitmq:4.1.6-management`),
/// or `None` for no tag, `latest`, or a tag that does not start with a number.
fn pinned_version(image: &str) -> Option<Vec<u64>> {
    let after_registry = image.rsplit('/').next().unwrap_or(image);
    let (_, tag) = after_registry.split_once(':')?;
    let version = tag.split('-').next()?;
    version.split('.').map(|part| part.parse().ok()).collect()
}

/// The host of `scheme://user:password@host:port/path`.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([':', '/']).next().unwrap_or_default()
}

/// Dockerfile instructions as `(KEYWORD, arguments)`, continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((op.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}
