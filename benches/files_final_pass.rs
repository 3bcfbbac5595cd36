//! The final pass inside the window (issue "Files" benchmark): a tree of many small files with
//! 1% changed since the last sync, copied three ways in the same run, through the same ssh hops
//! (rsync runs on the target and pulls from the source, both the lab sshd):
//!
//! (a) the flags users type by hand: `rsync -avz --checksum --delete`
//! (b) a plain faithful full pass: `rsync -aHAX --numeric-ids --delete`
//! (c) cutover's final pass with the change log (only the logged paths)
//! (d) the same as (c) with the 1% replaced by new files (written beside, renamed over) instead
//!     of rewritten in place: no ceiling, shown because apps that save that way take the
//!     slower road (a new file and a rename on the target, never a write in place)
//!
//! Each is timed with a cold page cache (when this process may drop caches) and a warm one.
//! Every variant starts from trees that are identical except for a fresh 1% of files changed
//! on the source; after each, the trees are checked identical.
//!
//! `cargo bench --bench files_final_pass -- [--files N] [--runs R]`

mod common;

use common::{arg, runtime};

use std::path::{Path, PathBuf};
use std::time::Instant;

use cutover::files::remote::{run, ssh_argv};
use cutover::files::rsync::peer_shell;
use cutover::files::sync;
use cutover::files::{Entry, hop};
use cutover::lab::{LabDir, Sshd, Supervision};
use cutover::plan;

fn file(root: &Path, i: u32) -> PathBuf {
    root.join(format!("d{:04}", i / 100))
        .join(format!("f{:03}.txt", i % 100))
}

fn populate(root: &Path, files: u32) {
    for i in 0..files {
        let path = file(root, i);
        if i % 100 == 0 {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        std::fs::write(&path, format!("file {i} {}\n", "x".repeat(64))).unwrap();
    }
}

/// Rewrites 1% of the files (a different slice each round).
fn change(root: &Path, files: u32, round: u32) {
    let step = 100;
    for k in 0..files / step {
        let i = (k * step + round * 7) % files;
        std::fs::write(file(root, i), format!("changed in round {round}: {i}\n")).unwrap();
    }
}

/// Changes 1% of a tree of `files` files in round `round`.
type Mutation = fn(&Path, u32, u32);

/// Replaces 1% of the files by new ones (written beside, renamed over), as many apps save.
fn replace(root: &Path, files: u32, round: u32) {
    let step = 100;
    for k in 0..files / step {
        let i = (k * step + round * 7 + 3) % files;
        let path = file(root, i);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("replaced in round {round}: {i}\n")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

/// Drops the page cache; false when not allowed (then only warm figures are given).
fn drop_caches() -> bool {
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn main() {
    let files = arg("--files", 100_000);
    let runs = arg("--runs", 1);
    let rt = runtime();
    rt.block_on(async move {
        let dir = LabDir::temporary().expect("lab dir");
        let sshd = Sshd::start(dir.path(), "sshd", Supervision::Owned)
            .await
            .expect("sshd");
        let (src, dst, state) = (
            dir.path().join("src"),
            dir.path().join("dst"),
            dir.path().join("state"),
        );
        let t = Instant::now();
        populate(&src, files);
        println!("tree: {files} files in {} directories, written in {:.1} s", files / 100, t.elapsed().as_secs_f64());
        let text = format!(
            "[migration]\nname = \"bench\"\nstate_dir = \"{}\"\n\
             [hosts.source]\nssh = \"lab-source\"\nssh_config = \"{cfg}\"\n\
             [hosts.target]\nssh = \"lab-target\"\nssh_config = \"{cfg}\"\n\
             [[files]]\nname = \"tree\"\nsource_path = \"{}/\"\ntarget_path = \"{}/\"\nchange_log = true\n",
            state.display(),
            src.display(),
            dst.display(),
            cfg = sshd.ssh_config.display(),
        );
        let plan = plan::parse_str(&text, Path::new("bench.toml")).unwrap();
        let mut entry = Entry::select(&plan, None).unwrap().remove(0);
        // All three go through the same hops: the operator's shared connections to both
        // hosts, and the running host's shared connection to the other one (`files::hop`,
        // which cutover's warm pass opens).
        entry.hop = hop::open(&entry, &state).await.unwrap();
        assert!(entry.hop.is_some(), "the running host's shared connection");
        let hand = |flags: &[&str]| {
            let mut argv: Vec<String> = vec!["rsync".into()];
            argv.extend(flags.iter().map(|f| f.to_string()));
            argv.push("-e".into());
            argv.push(peer_shell(&entry.source, entry.hop.as_deref()));
            argv.push(format!("lab-source:{}/", src.display()));
            argv.push(format!("{}/", dst.display()));
            ssh_argv(&entry.target, &argv)
        };
        let by_hand = hand(&["-avz", "--checksum", "--delete"]);
        let faithful = hand(&["-aHAX", "--numeric-ids", "--delete"]);

        // The first copy, which also leaves the trees identical.
        let t = Instant::now();
        sync::pass(&entry, sync::PassKind::Warm, &mut |_, _| {}).await.unwrap();
        println!("initial copy: {:.1} s", t.elapsed().as_secs_f64());

        let can_drop = drop_caches();
        if !can_drop {
            println!("page cache cannot be dropped here: warm figures only");
        }
        let mut round = 0;
        let mut rows: Vec<(&str, bool, f64)> = Vec::new();
        for _ in 0..runs {
            for cold in [true, false] {
                if cold && !can_drop {
                    continue;
                }
                for (name, argv) in [("a", &by_hand), ("b", &faithful)] {
                    round += 1;
                    change(&src, files, round);
                    if cold {
                        drop_caches();
                    }
                    let t = Instant::now();
                    let out = run(argv, std::time::Duration::from_secs(3600)).await.unwrap();
                    let secs = t.elapsed().as_secs_f64();
                    assert!(out.ok(), "{name}: {}", out.stderr);
                    rows.push((name, cold, secs));
                }
                // (c): a warm pass starts the change log (as during the sync), then 1% changes,
                // then the final pass from the log. (d): the same, the 1% replaced by new files
                // instead of rewritten in place.
                let kinds: [(&str, Mutation); 2] = [("c", change), ("d", replace)];
                for (name, mutate) in kinds {
                    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
                    round += 1;
                    mutate(&src, files, round);
                    if cold {
                        drop_caches();
                    }
                    let t = Instant::now();
                    let report = sync::final_pass(&entry, &state, &mut |_, _| {}).await.unwrap();
                    let secs = t.elapsed().as_secs_f64();
                    assert_eq!(report.method, "change-log", "{report:?}");
                    rows.push((name, cold, secs));
                    let verified = cutover::files::verify::verify(&entry).await.unwrap();
                    assert!(verified.matches(), "{:?}", &verified.differences[..verified.differences.len().min(5)]);
                }
            }
        }
        println!("{:<42} {:>6} {:>9}", "final pass (1% changed)", "cache", "seconds");
        let label = |n: &str| match n {
            "a" => "(a) rsync -avz --checksum --delete",
            "b" => "(b) rsync -aHAX --numeric-ids --delete",
            "c" => "(c) cutover final pass, change log",
            _ => "(d) as (c), the 1% replaced (write+rename)",
        };
        for (name, cold, secs) in &rows {
            println!("{:<42} {:>6} {:>9.2}", label(name), if *cold { "cold" } else { "warm" }, secs);
        }
        for cold in [true, false] {
            let median = |n: &str| {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.0 == n && r.1 == cold)
                    .map(|r| r.2)
                    .collect();
                if v.is_empty() {
                    return None;
                }
                Some(common::percentile(&mut v, 0.5))
            };
            if let (Some(a), Some(b), Some(c), Some(d)) =
                (median("a"), median("b"), median("c"), median("d"))
            {
                println!(
                    "{}: (c)/(a) = {:.3}, (c)/(b) = {:.3}, (d)/(a) = {:.3}, (d)/(b) = {:.3}",
                    if cold { "cold" } else { "warm" },
                    c / a,
                    c / b,
                    d / a,
                    d / b
                );
            }
        }
    });
}
