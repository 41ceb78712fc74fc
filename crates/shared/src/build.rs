//! For the integration tests and the benchmark: building this workspace's binaries from inside a
//! process that cargo started.

use std::process::Command;

/// A `cargo build --bins --workspace` (with `--release` if asked) that reuses what the calling
/// cargo already compiled. Cargo gives the processes it runs variables such as
/// `CARGO_MANIFEST_DIR` and `CARGO_PKG_NAME`; build scripts (ring's, for one) rerun when those
/// change, so passing them on would rebuild those crates here and again in the next outer build.
pub fn workspace_bins(release: bool) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--bins", "--workspace"]);
    if release {
        build.arg("--release");
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_the_child = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if set_for_the_child {
            build.env_remove(name.as_ref());
        }
    }
    build
}
