//! A full disk under the data directory (a real tmpfs of 64 MiB, mounted by the test; CI runs as root): the
//! distribution backs off instead of spinning, keeps what it staged, shows why, and finishes once space is
//! freed; every database connection stays usable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clouddp_e2e::console;
use clouddp_e2e::content::write_random_file;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        Self { path, _dir: dir }
    }

    fn free_bytes(&self) -> u64 {
        let output = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn status(manager: &ServiceProcess) -> serde_json::Value {
    console::json(
        &manager.url(),
        console::NO_MONITORING,
        &["content", "status", "big"],
    )
    .unwrap()[0]
        .clone()
}

fn fill(path: &Path, bytes: u64) {
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut file = std::fs::File::create(path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let take = left.min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut file, &chunk[..take]).is_err() {
            break;
        }
        left -= take as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_backs_off_keeps_staged_parts_and_finishes_once_space_is_freed() {
    let disk = SmallDisk::mount(64);
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .data_dir(&disk.path.join("data"))
            .env("CLOUDDP_DM__DISTRIBUTION__RETRY_MAX", "2s")
            // One 8 MiB part at a time: two go through before the disk is full.
            .env("CLOUDDP_DM__DISTRIBUTION__PART_CONCURRENCY", "1"),
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = console::run(&manager.url(), console::NO_MONITORING, args).unwrap();
        assert_eq!(output.code, 0, "{args:?}: {output:?}");
        output
    };
    let store = disk.path.join("store");
    run(&[
        "dp",
        "register",
        "--name",
        "small-disk",
        "--folder",
        store.to_str().unwrap(),
        "--address",
        "https://small-disk.corp.example",
    ]);
    let source = work.path().join("big");
    write_random_file(&source.join("big.bin"), 40 << 20, 5).unwrap();
    run(&[
        "content",
        "add",
        "--name",
        "big",
        "--type",
        "application",
        "--source",
        source.to_str().unwrap(),
    ]);
    // About 20 MiB free: the 40 MiB distribution runs out of space part way.
    let filler = disk.path.join("filler");
    fill(&filler, disk.free_bytes().saturating_sub(20 << 20));
    run(&["content", "distribute", "big", "--dp", "small-disk"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let stalled = loop {
        let job = status(&manager);
        assert_ne!(
            job["state"], "failed",
            "a full disk never fails the job: {job}"
        );
        if !job["error"].as_str().unwrap_or_default().is_empty() {
            break job;
        }
        assert!(Instant::now() < deadline, "no error shown: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = stalled["error"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        error.contains("no space left") && error.contains("disk under the data directory is full"),
        "the error says why, even while the database cannot record it: {stalled}"
    );
    // Backing off, not spinning: over 4 s, a handful of log lines at most.
    let lines_before = manager.log().lines().count();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lines = manager.log().lines().count() - lines_before;
    assert!(lines < 40, "{lines} log lines in 4 s");

    // Space again: the job finishes from what it kept, and the database takes writes on every connection.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = status(&manager);
        if job["state"] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "never finished: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        manager.log().contains("resuming distribution"),
        "the staged parts were kept: {}",
        manager.log()
    );
    let report = run(&[
        "content",
        "validate",
        "big",
        "--dp",
        "small-disk",
        "-o",
        "json",
    ])
    .json()
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");
    for index in 0..8 {
        run(&[
            "dp",
            "register",
            "--name",
            &format!("after-{index}"),
            "--folder",
            work.path().join(format!("after-{index}")).to_str().unwrap(),
            "--address",
            &format!("https://after-{index}.corp.example"),
        ]);
    }
}
