//! The `cutover` binary: its command tree, honest stubs, plan output, and the kept lab.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn cutover() -> Command {
    Command::cargo_bin("cutover").unwrap()
}

/// Everything the kept-lab commands printed, run at the most verbose log level.
static TRACED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Runs `cmd` with `CUTOVER_LOG=trace` and keeps its stdout and stderr for the secrets check.
fn traced(cmd: &mut Command) -> assert_cmd::assert::Assert {
    let assert = cmd.env("CUTOVER_LOG", "trace").assert();
    let out = assert.get_output();
    let mut log = TRACED.lock().unwrap();
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    assert
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// The subcommand names a `--help` lists under "Commands:", in order (the first word of each
/// entry line; continuation lines are indented further and skipped).
fn commands_in_help(args: &[&str]) -> Vec<String> {
    let out = cutover().args(args).arg("--help").assert().success();
    let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn help_shows_the_command_tree() {
    let expect = |args: &[&str], names: &[&str]| {
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.push("help".into());
        assert_eq!(commands_in_help(args), want, "cutover {args:?} --help");
    };
    expect(
        &[],
        &[
            "plan", "run", "status", "pg", "mysql", "files", "dns", "serve", "lab",
        ],
    );
    expect(&["files"], &["preflight", "sync", "final", "verify"]);
    let db = [
        "preflight",
        "start",
        "status",
        "cutover",
        "verify",
        "cleanup",
        "resync",
    ];
    expect(&["pg"], &db);
    expect(&["mysql"], &db);
    expect(
        &["dns"],
        &["lower-ttl", "restore-ttl", "status", "update", "wait"],
    );
    expect(&["lab"], &["up", "down", "demo"]);
    expect(&["plan"], &["check"]);
}

#[test]
fn commands_check_their_input_first() {
    cutover()
        .args([
            "pg",
            "cutover",
            &example("forgejo-postgres.toml"),
            "--pair",
            "nope",
        ])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no [[postgres]] pair named `nope`")
                .and(predicate::str::contains("forgejo-db")),
        );
    // `resync` is MySQL's repair; PostgreSQL's answer says why it needs none, touching nothing.
    cutover()
        .args([
            "pg",
            "resync",
            &example("forgejo-postgres.toml"),
            "--table",
            "public.t",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("apply worker stops on a column"));
    cutover()
        .args(["mysql", "resync", &example("forgejo-postgres.toml")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--table"));
    // The daemon's configuration, checked like a plan: every problem, each with its fix.
    cutover()
        .args(["serve", "--config", "/nonexistent.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent.toml"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "listen = \"0.0.0.0:9187\"\npoll = \"10ms\"\nplans = [\"missing.toml\"]\n",
    )
    .unwrap();
    cutover()
        .args(["serve", "--config"])
        .arg(&config)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("not a loopback address and no token is set")
                .and(predicate::str::contains("key `poll`"))
                .and(predicate::str::contains("missing.toml")),
        );
    // An invalid plan is reported as such (exit 2, the problem named).
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[migration]\nname = \"m\"\nstate_dir = \"/var/lib/cutover\"\nbogus_key = 1\n",
    )
    .unwrap();
    for args in [vec!["status"], vec!["run"], vec!["run", "--resume"]] {
        cutover().args(&args).arg(&bad).assert().code(2).stderr(
            predicate::str::contains("bogus_key")
                .and(predicate::str::contains("not implemented").not()),
        );
    }
    // A plan that cannot be read is the plan's fault too: exit 2, what is wrong and the fix.
    cutover()
        .args(["status", "/nonexistent/plan.toml"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("cannot read plan file `/nonexistent/plan.toml`")
                .and(predicate::str::contains("fix: check the path"))
                .and(predicate::str::contains("not implemented").not()),
        );
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"[migration]\nname = \"caf\xe9\"\n").unwrap();
    for (path, words) in [
        (latin1.as_path(), "not UTF-8"),
        (dir.path(), "it is a directory"),
    ] {
        for args in [vec!["plan", "check"], vec!["run"], vec!["status"]] {
            cutover()
                .args(&args)
                .arg(path)
                .assert()
                .code(2)
                .stderr(predicate::str::contains(words).and(predicate::str::contains("fix:")));
        }
    }
}

#[test]
fn plan_check_prints_the_steps_and_json_on_request() {
    cutover()
        .args(["plan", "check", &example("forgejo-postgres.toml")])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("point of no return").and(predicate::str::contains("rsync")),
        );
    let out = cutover()
        .args([
            "plan",
            "check",
            "--output",
            "json",
            &example("mariadb-app.toml"),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["valid"], true);
    let steps = doc["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["phase"] == "fence"));
    assert_eq!(
        steps
            .iter()
            .filter(|s| s["point_of_no_return"] == true)
            .count(),
        1
    );
}

#[test]
fn invalid_plan_exits_2_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[migration]\nname = \"x\"\nstate_dir = \"rel\"\n[[files]]\nname = \"f\"\nsource_path = \"a\"\ntarget_path = \"/b\"\npasword = 1\n",
    )
    .unwrap();
    cutover()
        .args(["plan", "check"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("4 problems")
                .and(predicate::str::contains("migration.state_dir"))
                .and(predicate::str::contains("no `[hosts]`"))
                .and(predicate::str::contains("files[0].source_path"))
                .and(predicate::str::contains("files[0].pasword")),
        );
    let out = cutover()
        .args(["plan", "check", "--output", "json"])
        .arg(&path)
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["problems"].as_array().unwrap().len(), 4);
}

#[test]
fn lab_up_writes_a_valid_plan_and_lab_down_stops_everything() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("lab");
    std::fs::set_permissions(
        parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let up = cutover().args(["lab", "up", "--dir"]).arg(&dir).assert();
    let up_out = String::from_utf8(up.get_output().stdout.clone()).unwrap();
    let up_err = String::from_utf8(up.get_output().stderr.clone()).unwrap();
    let state: serde_json::Value = match std::fs::read_to_string(dir.join("lab.json")) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(e) => panic!("lab up wrote no state ({e}):\n{up_out}\n{up_err}"),
    };
    let pids: Vec<u64> = state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        up.success();
        assert_eq!(pids.len(), 7);
        assert!(
            !up_out.contains(
                &std::fs::read_to_string(dir.join("secrets/pg-source.password"))
                    .unwrap()
                    .trim()
                    .to_owned()
            )
        );
        for pid in &pids {
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "server {pid} not running"
            );
        }
        cutover()
            .args(["plan", "check"])
            .arg(dir.join("plan.toml"))
            .assert()
            .success()
            .stdout(predicate::str::contains("valid"));
        cutover()
            .args(["lab", "up", "--dir"])
            .arg(&dir)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("already up"));
        pg_commands_on_the_lab(&dir.join("plan.toml"));
        mysql_commands_on_the_lab(&dir.join("plan.toml"));
        traced(cutover().args(["dns", "status"]).arg(dir.join("plan.toml"))).success();
        // Every command above ran at `trace`, dependencies' lines included: no secret of the
        // lab (database passwords, the PowerDNS API key, the TSIG key) was printed.
        let log = TRACED.lock().unwrap();
        assert!(
            log.contains("TRACE") || log.contains("DEBUG"),
            "the commands did log at a verbose level"
        );
        let mut checked = 0;
        // The PostgreSQL servers' TLS keys too (the lab's clusters take TLS only).
        let keys = ["pg-source", "pg-target"].map(|c| dir.join(c).join("server.key"));
        assert!(keys.iter().all(|k| k.is_file()), "the lab's TLS keys exist");
        for path in std::fs::read_dir(dir.join("secrets"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .chain(keys)
        {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for secret in text
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= 8 && !l.starts_with("-----"))
            {
                checked += 1;
                assert!(
                    !log.contains(secret),
                    "a secret from {} was printed",
                    path.display()
                );
            }
        }
        assert!(checked >= 4, "the lab's secrets were found ({checked})");
    }));
    cutover()
        .args(["lab", "down", "--dir"])
        .arg(&dir)
        .assert()
        .success();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "server {pid} survived lab down"
        );
    }
    assert!(!dir.exists(), "lab down removes the directory");
}

/// The `pg` commands end to end on the kept lab's plan, through the binary.
fn pg_commands_on_the_lab(plan: &Path) {
    let pg = |args: &[&str]| {
        let mut cmd = cutover();
        cmd.arg("pg").arg(args[0]).arg(plan).args(&args[1..]);
        traced(&mut cmd)
    };
    pg(&["preflight"])
        .success()
        .stdout(predicate::str::contains("preflight passed"));
    // Cutting over before replication exists is refused and changes nothing.
    pg(&["cutover"])
        .code(1)
        .stderr(predicate::str::contains("run `cutover pg start` first"));
    let status = |args: &[&str]| -> serde_json::Value {
        let out = pg(args).success().get_output().stdout.clone();
        serde_json::from_slice(&out).unwrap()
    };
    let before = status(&["status", "--output", "json"]);
    assert_eq!(before["pairs"][0]["subscribed"], false, "{before}");
    assert_eq!(
        before["pairs"][0]["blocked_roles"]["source"],
        serde_json::json!([]),
        "the refused cutover fenced nothing: {before}"
    );
    pg(&["start"])
        .success()
        .stdout(predicate::str::contains("schema copied"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = pg(&["status", "--output", "json"])
            .success()
            .get_output()
            .stdout
            .clone();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let status = &doc["pairs"][0];
        assert_eq!(status["blocked_roles"]["target"][0], "app");
        if status["all_ready"] == true && status["lag_bytes"].as_i64().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready: {status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    pg(&["status"])
        .success()
        .stdout(predicate::str::contains("initial copy: 4/4 tables ready"));
    pg(&["cutover", "--pair", "app-pg"])
        .success()
        .stdout(predicate::str::contains("Writes were unavailable for"));
    pg(&["verify"])
        .success()
        .stdout(predicate::str::contains("every table and object matches"));
    pg(&["cleanup"])
        .success()
        .stdout(predicate::str::contains("stay blocked on the source"));
    let again = status(&["cleanup", "--output", "json"]);
    assert_eq!(
        again["pairs"][0]["done"],
        serde_json::json!([]),
        "a second cleanup finds nothing to do: {again}"
    );
}

/// The `mysql` commands end to end on the kept lab's plan, through the binary.
fn mysql_commands_on_the_lab(plan: &Path) {
    let mysql = |args: &[&str]| {
        let mut cmd = cutover();
        cmd.arg("mysql").arg(args[0]).arg(plan).args(&args[1..]);
        traced(&mut cmd)
    };
    mysql(&["preflight"]).success().stdout(
        predicate::str::contains("preflight passed")
            .and(predicate::str::contains("replication by GTID")),
    );
    mysql(&["cutover"]).code(1).stderr(
        predicate::str::contains("run `cutover mysql start`")
            .and(predicate::str::contains("this command changed nothing")),
    );
    // (status exits 1 while nothing replicates)
    let out = mysql(&["status", "--output", "json"])
        .code(1)
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["pairs"][0]["configured"], false, "{doc}");
    mysql(&["start"]).success().stdout(predicate::str::contains(
        "snapshot streamed into the target",
    ));
    let out = mysql(&["status", "--output", "json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["pairs"][0]["sql_running"], "Yes", "{doc}");
    assert!(
        doc["pairs"][0]["lag"]["replicated_after"]
            .as_f64()
            .is_some(),
        "{doc}"
    );
    mysql(&["status"])
        .success()
        .stdout(predicate::str::contains("lag: heartbeat"));
    mysql(&["cutover", "--pair", "app-mariadb"])
        .success()
        .stdout(predicate::str::contains("Writes were unavailable for"));
    mysql(&["verify"]).success().stdout(
        predicate::str::contains("every table and object matches")
            .and(predicate::str::contains("app.writes")),
    );
    mysql(&["cleanup"])
        .success()
        .stdout(predicate::str::contains("source stays read-only"));
    let out = mysql(&["cleanup", "--output", "json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let again: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        again["pairs"][0]["done"],
        serde_json::json!([]),
        "a second cleanup finds nothing to do: {again}"
    );
}

#[test]
fn lab_demo_migrates_both_databases_under_writes_loses_nothing_and_switches_dns() {
    cutover().args(["lab", "demo"]).assert().success().stdout(
        predicate::str::contains("0 lost writes")
            .and(predicate::str::contains("PostgreSQL: "))
            .and(predicate::str::contains(
                "lost 0, duplicated 0, unexpected 0; ids continue on the target: true",
            ))
            .and(predicate::str::contains(
                "completed: every target is the primary, every check passed",
            ))
            .and(
                predicate::str::contains("done (")
                    .and(predicate::str::contains("127.0.0.1 -> 127.0.0.2")),
            )
            .and(predicate::str::contains(
                "every authoritative server serves 127.0.0.2",
            ))
            .and(predicate::str::contains(
                "files: both trees identical by checksum",
            ))
            .and(predicate::str::contains(
                "hooks ran: promote lab-demo rollback=0; switch lab-demo rollback=0",
            ))
            .and(
                predicate::str::contains("check app health")
                    .and(predicate::str::contains("passed after")),
            )
            // Users behind the lab's HAProxy moved from the old host to the new, none failed.
            .and(predicate::str::contains(
                "requests through HAProxy, 0 failed",
            ))
            .and(predicate::str::contains(
                "then the new host every one after (its first answer",
            )),
    );
}

#[test]
fn a_closed_pipe_never_panics() {
    // `cutover ... | head -1`: the reader goes away before the output is written.
    for args in [
        vec![
            "plan".to_owned(),
            "check".to_owned(),
            example("forgejo-postgres.toml"),
        ],
        vec!["--help".to_owned()],
        vec![
            "run".to_owned(),
            "--dry-run".to_owned(),
            example("forgejo-postgres.toml"),
        ],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cutover"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && out.status.code() != Some(101),
            "{args:?}: {:?}\n{stderr}",
            out.status
        );
        assert!(
            matches!(out.status.code(), Some(0)),
            "{args:?}: {:?}",
            out.status
        );
    }
}

/// The code in a Markdown text: inline spans and fenced blocks.
fn code_in(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_owned());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    out
}

#[test]
fn every_command_and_example_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![root.join("README.md")];
    texts.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    assert!(texts.len() >= 8, "the guides are there: {texts:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.lines().count() <= 200, "the README stays short");
    let groups = [
        "plan", "run", "status", "pg", "mysql", "files", "dns", "serve", "lab",
    ];
    let with_subcommands = ["plan", "pg", "mysql", "files", "dns", "lab"];
    let mut named = std::collections::BTreeSet::new();
    let mut examples = std::collections::BTreeSet::new();
    for path in &texts {
        let text = std::fs::read_to_string(path).unwrap();
        // Every guide a page links to exists.
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let file = path
                .parent()
                .unwrap()
                .join(target.split('#').next().unwrap());
            assert!(
                file.exists(),
                "{}: link to {target} leads nowhere",
                path.display()
            );
        }
        for code in code_in(&text) {
            let words: Vec<&str> = code.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                if let Some(e) = w.strip_prefix("examples/")
                    && e.ends_with(".toml")
                {
                    examples.insert(e.trim_end_matches([',', ';', ':', ')']).to_owned());
                }
                if *w != "cutover" {
                    continue;
                }
                let Some(group) = words.get(i + 1).filter(|g| groups.contains(g)) else {
                    continue;
                };
                let next = words.get(i + 2).copied().unwrap_or_default();
                if with_subcommands.contains(group)
                    && !next.is_empty()
                    && next.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                {
                    named.insert(vec![group.to_string(), next.to_owned()]);
                } else if next.starts_with("--") {
                    let flag = next.split('=').next().unwrap().to_owned();
                    named.insert(vec![group.to_string(), flag]);
                } else {
                    named.insert(vec![group.to_string()]);
                }
            }
        }
    }
    assert!(named.len() > 20, "the guides name the commands: {named:?}");
    for command in &named {
        match command.as_slice() {
            [group, flag] if flag.starts_with("--") => {
                let help = cutover().args([group.as_str(), "--help"]).output().unwrap();
                let text = String::from_utf8_lossy(&help.stdout);
                assert!(
                    text.contains(flag.as_str()),
                    "`cutover {group} {flag}` is named but `{group}` has no {flag}"
                );
            }
            _ => {
                let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
                args.push("--help");
                cutover()
                    .args(&args)
                    .assert()
                    .success()
                    .stdout(predicate::str::contains("Usage"));
            }
        }
    }
    // Every example a guide names ships, and checks clean.
    assert!(!examples.is_empty());
    for e in &examples {
        let text = std::fs::read_to_string(example(e))
            .unwrap_or_else(|err| panic!("examples/{e} is named but cannot be read: {err}"));
        if text.contains("[migration]") {
            cutover()
                .args(["plan", "check", &example(e)])
                .assert()
                .success();
        }
    }
}
