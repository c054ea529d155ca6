//! `testbed up` refuses, starting nothing, when something is in the way or missing.
//! These need no running testbed and never disturb one.

use std::process::Command;

fn testbed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
}

#[test]
fn an_existing_state_directory_is_refused_and_left_alone() {
    let dir = tempfile_dir();
    std::fs::write(dir.join("marker"), "mine").unwrap();
    let out = testbed().arg("--dir").arg(&dir).arg("up").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start") && err.contains("make testbed-down"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("marker")).unwrap(), "mine", "nothing touched");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "nothing added");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_prerequisite_is_named() {
    let dir = std::env::temp_dir().join(format!("testbed-refusal-{}", std::process::id()));
    let tools = tempfile_dir();
    let out = testbed().arg("--dir").arg(&dir).arg("up").arg("--tools").arg(&tools).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing prerequisite") && err.contains("kube-apiserver"), "{err}");
    assert!(!dir.exists(), "nothing created");
    std::fs::remove_dir_all(&tools).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "testbed-it-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
