//! Names the commit the binary is built from, for `--version`: `git rev-parse --short HEAD`
//! when git and the repository are there, else "unknown" (a source tarball, a container
//! build without `.git`). Never fails the build.

use std::process::Command;

/// `git rev-parse ARGS`, trimmed, when it succeeds.
fn rev_parse(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("rev-parse")
        .args(args)
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

fn main() {
    // A build without `.git` (a container stage) may pass the commit in.
    let given = std::env::var("PROVISIOND_COMMIT").ok();
    let commit = given
        .or_else(|| rev_parse(&["--short", "HEAD"]))
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PROVISIOND_COMMIT={commit}");
    // A new commit moves HEAD or the branch it names: rebuild to name it. `--git-path`
    // resolves both in a worktree too (refs live in the common directory).
    if let Some(head) = rev_parse(&["--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
        if let Some(r) =
            rev_parse(&["--symbolic-full-name", "HEAD"]).filter(|r| r.starts_with("refs/"))
        {
            // Only a file that exists: a missing one (a packed ref) would rerun every build.
            let path = rev_parse(&["--git-path", &r]).filter(|p| std::path::Path::new(p).exists());
            if let Some(path) = path {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rerun-if-env-changed=PROVISIOND_COMMIT");
}
