//! The browser suite: a real headless Chromium, driven by the scripts in `tests/browser/`
//! (plain ESM on a pinned playwright-core), signs in through the form and submits jobs from the
//! submit page against the real API and worker. Screenshots of each page go to
//! `target/browser-screenshots/<scenario>/` (CI keeps them).
//!
//! Chromium is Debian's (`OFFLOAD_CHROMIUM`, else `chromium` on the PATH) and the driver is the
//! playwright-core `scripts/test.sh` installs into `~/.cache/offload/browser`
//! (`OFFLOAD_BROWSER_DRIVER`). Either missing fails the test with the fix: never a silent pass.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, process::Command};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};

mod support {
    pub mod photo;
}

/// The hard bound on one script, Chromium's launch included.
const SCRIPT_BOUND: Duration = Duration::from_secs(120);

/// How long the API may take to list a kind a worker announced.
const WITHIN: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "run scripts/test.sh (it installs Debian's chromium and the pinned \
                            playwright-core into ~/.cache/offload/browser), or set \
                            OFFLOAD_CHROMIUM and OFFLOAD_BROWSER_DRIVER";

/// The Chromium executable, or a failure saying how to get one.
fn chromium() -> PathBuf {
    let found = std::env::var_os("OFFLOAD_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("chromium"))
                    .find(|p| p.is_file())
            })
        });
    match found {
        Some(path) if path.is_file() => path,
        other => panic!(
            "Chromium is missing ({}): {INSTALL_HINT}",
            other.map_or_else(
                || "no chromium on the PATH".to_owned(),
                |p| format!("{} is not a file", p.display())
            )
        ),
    }
}

/// The directory whose `node_modules` holds playwright-core, or a failure saying how to get it.
fn driver() -> PathBuf {
    let dir = std::env::var_os("OFFLOAD_BROWSER_DRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            cache.join("offload/browser")
        });
    let package = dir.join("node_modules/playwright-core/package.json");
    assert!(
        package.is_file(),
        "the browser driver is missing ({} not found): {INSTALL_HINT}",
        package.display()
    );
    dir
}

/// `target/browser-screenshots/<scenario>`, emptied: what CI keeps as artifacts.
fn screenshot_dir(scenario: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(tests).join("target")
        });
    let dir = target.join("browser-screenshots").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the screenshot directory can be made");
    dir
}

/// Runs `node tests/browser/<script>` with `vars` within [`SCRIPT_BOUND`] (killed past it),
/// prints its output and the screenshots it made, and fails unless it exited 0.
async fn run_script(script: &str, shots: &Path, vars: &[(&str, String)], api: &ApiProcess) {
    let (chromium, driver) = (chromium(), driver());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("browser")
        .join(script);
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(&path)
        .env("OFFLOAD_CHROMIUM", &chromium)
        .env("OFFLOAD_BROWSER_DRIVER", &driver)
        .env("OFFLOAD_BROWSER_SCREENSHOTS", shots)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills Chromium with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("node cannot start ({e}): install Node.js; {INSTALL_HINT}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let err = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let status = tokio::time::timeout(SCRIPT_BOUND, child.wait()).await;
    if status.is_err() {
        if let Some(pid) = child.id() {
            // The whole group: node and the Chromium it launched.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = child.kill().await;
    }
    let (out, err) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
    println!(
        "--- node tests/browser/{script} ({:.1} s)\n{out}{err}",
        started.elapsed().as_secs_f64()
    );
    let mut made: Vec<_> = std::fs::read_dir(shots)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    made.sort();
    for shot in &made {
        println!("screenshot kept: {}", shot.display());
    }
    if !status
        .as_ref()
        .is_ok_and(|s| s.as_ref().is_ok_and(ExitStatus::success))
    {
        // What the API saw, for a step that waited in vain.
        let logs = api.logs();
        println!("--- the API's last log lines");
        for line in &logs[logs.len().saturating_sub(60)..] {
            println!("{line}");
        }
    }
    match status {
        Err(_) => panic!(
            "tests/browser/{script} did not finish within {SCRIPT_BOUND:?} (killed):\n{out}{err}"
        ),
        Ok(status) => {
            let status = status.expect("node's exit status");
            assert!(
                status.success(),
                "tests/browser/{script} failed ({status}):\n{out}{err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_submits_a_noop_job_from_the_form_and_sees_it_succeed() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "browser-1", 1, &[]).await;
    // The submit page offers the kinds the API knows: wait for the worker's announcement.
    poll(WITHIN, "the API to list noop", || async {
        api.kind("noop").await.map(|_| ())
    })
    .await;
    // A user's key, as a person would paste it: not the harness's admin key.
    let token = api.create_key("browser-user", &["submit", "read"], &[]);

    run_script(
        "upload.mjs",
        &screenshot_dir("upload"),
        &[
            ("OFFLOAD_BROWSER_BASE", api.base.clone()),
            ("OFFLOAD_BROWSER_TOKEN", token),
        ],
        &api,
    )
    .await;

    drop(worker);
    drop(api);
    env.cleanup().await;
}

/// A phone photo uploaded through the submit page's `image.thumbnail` form: a 300×400 JPEG whose
/// EXIF Orientation (6) turns it into a 400×300 landscape, so a 64 px wide thumbnail (64×48)
/// is only what the script sees if the worker applied the orientation (else it is 48×64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_uploads_a_photo_and_sees_its_thumbnail_of_the_requested_width() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "browser-1", 1, &[]).await;
    poll(WITHIN, "the API to list image.thumbnail", || async {
        api.kind("image.thumbnail").await.map(|_| ())
    })
    .await;
    let shots = screenshot_dir("thumbnail");
    let photo = shots.join("photo.jpg");
    std::fs::write(
        &photo,
        support::photo::with_exif_orientation(&support::photo::jpeg(300, 400), 6),
    )
    .expect("the photo is written");
    let token = api.create_key("browser-user", &["submit", "read"], &[]);

    run_script(
        "thumbnail.mjs",
        &shots,
        &[
            ("OFFLOAD_BROWSER_PHOTO", photo.display().to_string()),
            ("OFFLOAD_BROWSER_BASE", api.base.clone()),
            ("OFFLOAD_BROWSER_TOKEN", token),
            ("OFFLOAD_BROWSER_THUMB_WIDTH", "64".to_owned()),
            ("OFFLOAD_BROWSER_THUMB_HEIGHT", "48".to_owned()),
        ],
        &api,
    )
    .await;

    drop(worker);
    drop(api);
    env.cleanup().await;
}

/// The dashboard, driven as an operator would (tests/browser/dashboard.mjs): every page checked
/// by axe-core and screenshotted, a job submitted from a generated form and followed live,
/// filters and search, a cancel, a confirmed bulk redrive of the dead jobs made here, a schedule
/// paused and resumed, the audit list, a phone's width, and a read key offered no action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_dashboard_in_a_browser() {
    const DEAD: usize = 50;
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "browser-1", 2, &[]).await;
    poll(WITHIN, "the API to list sleep", || async {
        api.kind("sleep").await.map(|_| ())
    })
    .await;
    // Dead letters to redrive: each fails its only attempt (retryably), so its redrive, the
    // second attempt, succeeds.
    let mut ids = Vec::new();
    for _ in 0..DEAD {
        let job = api
            .submit(serde_json::json!({
                "kind": "sleep",
                "payload": {"ms": 1, "fail_attempts": 1},
                "max_attempts": 1,
            }))
            .await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        api.wait_for_status(id, "dead", WITHIN).await;
    }
    let schedule = "nightly-report";
    let response = api
        .http
        .post(api.url("/schedules"))
        .json(&serde_json::json!({
            "name": schedule,
            "cron": "0 3 * * *",
            "job": {"kind": "noop"},
        }))
        .send()
        .await
        .expect("POST /schedules");
    assert_eq!(response.status(), 201, "the schedule is created");
    let admin = api.create_key("dashboard-admin", &["admin"], &[]);
    let reader = api.create_key("dashboard-reader", &["read"], &[]);

    run_script(
        "dashboard.mjs",
        &screenshot_dir("dashboard"),
        &[
            ("OFFLOAD_BROWSER_BASE", api.base.clone()),
            ("OFFLOAD_BROWSER_TOKEN", admin),
            ("OFFLOAD_BROWSER_READ_TOKEN", reader),
            ("OFFLOAD_BROWSER_DEAD", DEAD.to_string()),
            ("OFFLOAD_BROWSER_REDRIVEN", ids[0].clone()),
            ("OFFLOAD_BROWSER_SCHEDULE", schedule.to_owned()),
        ],
        &api,
    )
    .await;
    // What the browser saw, checked through the API: every redriven job succeeded.
    for id in &ids {
        let job = api.wait_for_status(id, "succeeded", WITHIN).await;
        assert_eq!(job["attempt"], 2, "{job}");
    }

    drop(worker);
    drop(api);
    env.cleanup().await;
}
