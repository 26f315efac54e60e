//! Finding the node binaries `searchtree up` starts.
//!
//! They are looked for in `$SEARCHTREE_BIN_DIR`, else beside the running
//! executable (where `cargo build` and `cargo install` put them). When
//! `searchtree` itself was started by cargo (`cargo run`, `cargo test`), the
//! node binaries are first built with that same cargo and profile, so
//! `cargo run --release -- demo` works on a fresh clone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The environment variable naming a directory that holds the node binaries.
pub const BIN_DIR_ENV: &str = "SEARCHTREE_BIN_DIR";
/// The packages whose binaries are the nodes.
pub const NODE_PACKAGES: [&str; 3] = ["searchtree-leaf", "searchtree-parent", "searchtree-root"];

/// Paths of the three node binaries.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    /// `searchtree-leaf`.
    pub leaf: PathBuf,
    /// `searchtree-parent`.
    pub parent: PathBuf,
    /// `searchtree-root`.
    pub root: PathBuf,
}

impl NodeBinaries {
    /// Finds the node binaries (building them first when run under cargo).
    pub fn locate() -> anyhow::Result<NodeBinaries> {
        let dir = match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let dir = exe_dir()?;
                if started_by_cargo() {
                    build_with_cargo(&dir, &NODE_PACKAGES)?;
                }
                dir
            }
        };
        Self::in_dir(&dir)
    }

    /// The node binaries in `dir`, which must all exist.
    pub fn in_dir(dir: &Path) -> anyhow::Result<NodeBinaries> {
        let find = |name: &str| {
            let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{name} not found in {}: build the node binaries with \
                     `cargo build --release --workspace`, or set {BIN_DIR_ENV} to where they are",
                    dir.display()
                )
            }
        };
        Ok(NodeBinaries {
            leaf: find("searchtree-leaf")?,
            parent: find("searchtree-parent")?,
            root: find("searchtree-root")?,
        })
    }
}

/// Whether this process was started by `cargo run` or `cargo test`.
pub fn started_by_cargo() -> bool {
    std::env::var_os("CARGO").is_some() && std::env::var_os("CARGO_MANIFEST_DIR").is_some()
}

/// The directory cargo puts binaries of the running profile in.
pub fn exe_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().context("executable has no directory")?;
    // Test and example executables live one level down, in deps/ or examples/.
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir = dir.parent().context("deps/ has no parent")?;
    }
    Ok(dir.to_path_buf())
}

/// Builds the binaries of `packages` into `profile_dir` with the cargo that
/// started us (a no-op when they are up to date).
pub fn build_with_cargo(profile_dir: &Path, packages: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").expect("checked by the caller");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("checked"));
    let target_dir = profile_dir
        .parent()
        .context("profile directory has no parent")?;
    let profile = profile_dir
        .file_name()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    for package in packages {
        cmd.args(["-p", package]);
    }
    cmd.arg("--bins");
    tracing::info!(
        "making sure {} are built (cargo build)",
        packages.join(", ")
    );
    tracing::debug!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("running cargo to build {}", packages.join(", ")))?;
    if !status.success() {
        bail!("building {} failed ({status})", packages.join(", "));
    }
    Ok(())
}
