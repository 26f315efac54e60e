//! The container image and the Kubernetes manifests, checked without a
//! cluster: the manifests against the Kubernetes API schemas (strictly, so a
//! misspelt field fails), the Dockerfile ships every binary, and every flag
//! the manifests give a binary is one that binary takes.

use std::path::{Path, PathBuf};
use std::process::Command;

use searchtree_tests::{cli_binary, node_binaries};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn manifests() -> Vec<(PathBuf, String)> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests: {files:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn the_manifests_match_the_kubernetes_schemas() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/validate_k8s.sh"))
        .output()
        .expect("run scripts/validate_k8s.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Every object of every file was checked, none failed.
    let objects: usize = manifests()
        .iter()
        .map(|(_, t)| t.lines().filter(|l| l.starts_with("kind:")).count())
        .sum();
    assert_eq!(
        text.matches(" passed for resource ").count(),
        objects,
        "{text}"
    );
}

#[test]
fn the_image_ships_every_binary() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from=build"))
        .collect();
    for bin in [
        "searchtree",
        "searchtree-leaf",
        "searchtree-parent",
        "searchtree-root",
    ] {
        assert!(
            copied.iter().any(|l| l.contains(&format!("/out/{bin} "))),
            "the image lacks {bin}: {copied:?}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "the build stage does not collect {bin}"
        );
    }
    assert!(dockerfile.contains("USER 10001"), "the image runs as root");
}

/// The `--help` text of the binary a manifest runs.
fn help(binary: &str, sub: Option<&str>) -> String {
    let bins = node_binaries();
    let path = match binary {
        "searchtree-leaf" => bins.leaf,
        "searchtree-parent" => bins.parent,
        "searchtree-root" => bins.root,
        "searchtree" => cli_binary(),
        other => panic!("unknown binary {other}"),
    };
    let mut cmd = Command::new(path);
    cmd.args(sub).arg("--help");
    String::from_utf8(cmd.output().expect("--help").stdout).unwrap()
}

#[test]
fn every_flag_in_the_manifests_is_one_its_binary_takes() {
    let mut checked = 0;
    for (path, text) in manifests() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let item = line.trim().strip_prefix("- ").unwrap_or("");
            // A node's argument list: its binary, then one flag per item.
            if let Some(binary) = ["searchtree-leaf", "searchtree-parent", "searchtree-root"]
                .into_iter()
                .find(|b| item == *b)
            {
                let help = help(binary, None);
                for flag_line in &lines[i + 1..] {
                    let Some(arg) = flag_line.trim().strip_prefix("- --") else {
                        break;
                    };
                    let flag = arg.split('=').next().unwrap();
                    assert!(
                        help.contains(&format!("--{flag} "))
                            || help.contains(&format!("--{flag}\n")),
                        "{}: {binary} takes no --{flag}",
                        path.display()
                    );
                    checked += 1;
                }
            }
            // The init container's build command (a folded shell line).
            if line.contains("searchtree build") && !line.trim_start().starts_with('#') {
                let help = help("searchtree", Some("build"));
                let command: String = lines[i..]
                    .iter()
                    .take_while(|l| !l.contains("resources:"))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                for flag in command
                    .split_whitespace()
                    .filter_map(|t| t.strip_prefix("--"))
                {
                    assert!(
                        help.contains(&format!("--{flag} ")),
                        "{}: searchtree build takes no --{flag}",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 40, "only {checked} flags found in the manifests");
}
