//! Confirming a DNS switch on every authoritative server (issue #5 benchmark).
//!
//! Two real PowerDNS servers on 127.0.0.1 serve the same zone with N A records; both are
//! switched to new values, then the switch is confirmed twice in the same process:
//! `cutover`'s propagation check (every record on every server, queries in parallel), and a
//! serial `dig` loop like the ones people write by hand (one `dig +norec +short` per record
//! and server, output compared with the new value), run by bash from a script file.
//!
//! `cargo bench --bench dns_propagation -- [--records N] [--runs R]`

mod common;

use common::{arg, runtime};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cutover::dns::{Discovery, Target, propagation};
use cutover::lab::{LabDir, PowerDns, Supervision};
use cutover_providers::powerdns::PowerDns as PowerDnsApi;
use cutover_providers::{DnsProvider, RecordSet, RecordType};

const ZONE: &str = "bench.example.com";

fn record_name(i: u32) -> String {
    format!("r{i:04}.{ZONE}")
}

fn new_value(i: u32) -> String {
    format!("198.51.{}.{}", 100 + i / 250, 1 + i % 250)
}

fn plan_text(dir: &Path, a: &PowerDns, b: &PowerDns, records: u32) -> String {
    let mut text = format!(
        "[migration]\nname = \"dns-bench\"\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    );
    for i in 0..records {
        text.push_str(&format!(
            "\n[[dns]]\nname = \"{}\"\ntype = \"A\"\nzone = \"{ZONE}\"\nvalues = [\"{}\"]\n\
             nameservers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
             provider = {{ kind = \"powerdns\", api_url = \"{}\", api_key_file = \"{}\" }}\n",
            record_name(i),
            new_value(i),
            a.dns_port,
            b.dns_port,
            a.api_url(),
            a.api_key_file.display()
        ));
    }
    text
}

fn dig_loop_script(dir: &Path, ports: [u16; 2], records: u32) -> std::path::PathBuf {
    let mut script = String::from(
        "#!/bin/bash\n# what a careful operator runs after switching DNS\nset -u\nok=0\n",
    );
    for i in 0..records {
        for port in ports {
            script.push_str(&format!(
                "[ \"$(dig +norec +short @127.0.0.1 -p {port} {} A)\" = \"{}\" ] && ok=$((ok+1))\n",
                record_name(i),
                new_value(i)
            ));
        }
    }
    script.push_str("echo $ok\n");
    let path = dir.join("dig-loop.sh");
    std::fs::write(&path, script).expect("write script");
    path
}

fn main() {
    let records = arg("--records", 1000);
    let runs = arg("--runs", 5).max(1);
    let rt = runtime();
    rt.block_on(async move {
        let dir = LabDir::temporary().expect("lab dir");
        let (a, b) = tokio::try_join!(
            PowerDns::start(dir.path(), "pdns-a", Supervision::Owned),
            PowerDns::start(dir.path(), "pdns-b", Supervision::Owned),
        )
        .expect("PowerDNS servers start");
        let old: Vec<(String, &str, u32, Vec<String>)> = (0..records)
            .map(|i| (record_name(i), "A", 60, vec!["192.0.2.1".to_owned()]))
            .collect();
        let old_refs: Vec<(&str, &str, u32, Vec<String>)> =
            old.iter().map(|(n, t, ttl, v)| (n.as_str(), *t, *ttl, v.clone())).collect();
        for server in [&a, &b] {
            server.create_zone(ZONE, &old_refs).await.expect("zone");
        }
        let plan = cutover::plan::parse_str(&plan_text(dir.path(), &a, &b, records), Path::new("bench.toml"))
            .expect("bench plan is valid");
        let discovery = Discovery::system();
        let mut targets = Vec::new();
        for (i, record) in plan.dns.iter().enumerate() {
            targets.push(Target::resolve(i, record, &discovery).await.expect("target"));
        }
        // Switch both servers (one PATCH each), as a provider and its secondary would.
        let sets: Vec<RecordSet> = (0..records)
            .map(|i| RecordSet::new(&record_name(i), RecordType::A, 60, &[new_value(i)]))
            .collect();
        for server in [&a, &b] {
            PowerDnsApi::new(&server.api_url(), "localhost", server.api_key().clone())
                .unwrap()
                .replace_many(ZONE, &sets)
                .await
                .expect("switch");
        }
        println!("DNS propagation benchmark: {records} records x 2 authoritative servers ({} answers to confirm)", records * 2);

        let mut ours = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let outcome = propagation::wait(&targets, Duration::from_secs(60), Duration::from_millis(100), |_, _| {}).await;
            let took = started.elapsed();
            assert!(outcome.complete, "cutover did not confirm every record");
            ours.push(took.as_secs_f64());
        }
        ours.sort_by(|x, y| x.total_cmp(y));
        let median = ours[ours.len() / 2];

        let script = dig_loop_script(dir.path(), [a.dns_port, b.dns_port], records);
        let started = Instant::now();
        let out = Command::new("bash").arg(&script).output().expect("bash runs");
        let serial = started.elapsed().as_secs_f64();
        let confirmed: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        assert_eq!(confirmed, records * 2, "the dig loop must confirm every answer too");

        println!("  cutover propagation check: median {:.3} s over {runs} runs (min {:.3}, max {:.3})", median, ours[0], ours[ours.len() - 1]);
        println!("  serial dig loop:           {:.3} s ({} dig processes)", serial, records * 2);
        println!("  ratio: cutover is {:.0}x faster (target >= 20x)", serial / median);
    });
}
