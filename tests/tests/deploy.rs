//! Every configuration file under deploy/ is accepted by the binary it configures.

use std::process::Command;

use clouddp_e2e::repo_root;

#[test]
fn every_config_under_deploy_parses_with_its_binary() {
    let dir = repo_root().join("deploy/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let output = if name.starts_with("distribution-manager") {
            Command::new(clouddp_e2e::bin("clouddp-distribution-manager"))
                .arg("--config")
                .arg(&path)
                .arg("--check-config")
                .output()
        } else if name.starts_with("monitoring") {
            Command::new(clouddp_e2e::bin("clouddp-monitoring"))
                .arg("--config")
                .arg(&path)
                .arg("--check-config")
                .output()
        } else if name.starts_with("agent") {
            Command::new(clouddp_e2e::bin("clouddp-agent"))
                .arg("--config")
                .arg(&path)
                .arg("config")
                .output()
        } else {
            panic!(
                "{} is not parsed by any binary: name it after the binary it configures",
                path.display()
            );
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{} was refused: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the manager, monitoring and agent configs, found {checked}"
    );
}

#[test]
fn systemd_units_run_our_binaries_with_configs_that_exist() {
    let dir = repo_root().join("deploy/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{} has no ExecStart", path.display()));
        let mut words = exec.split_whitespace();
        let binary = words.next().unwrap().rsplit('/').next().unwrap();
        clouddp_e2e::bin(binary);
        let args: Vec<&str> = words.collect();
        let config = args
            .windows(2)
            .find(|pair| pair[0] == "--config")
            .map(|pair| pair[1])
            .unwrap_or_else(|| panic!("{} starts {binary} without --config", path.display()));
        let file_name = config.rsplit('/').next().unwrap();
        assert!(
            repo_root().join("deploy/config").join(file_name).is_file(),
            "{} points at {config}, which deploy/config does not provide",
            path.display()
        );
        units += 1;
    }
    assert_eq!(units, 2, "one unit per service");
}
