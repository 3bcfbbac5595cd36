//! The fuzz targets' entry points (`fuzz/`, cargo-fuzz on nightly) run in the ordinary suite on
//! a fixed set of mutations of real inputs, so a parser that panics on hostile input fails CI
//! even where no fuzzer runs: every example plan, HAProxy's answer, a change log, rsync's
//! statistics, version strings, GTID lists, a journal, DNS answers, DNS providers' values and
//! raw API answers, and pgoutput messages, each mutated thousands of ways
//! (bytes flipped, cut, repeated, spliced with the characters parsers trip on).

use std::panic::{AssertUnwindSafe, catch_unwind};

/// A small deterministic generator (xorshift64*): the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TRICKY: &[&[u8]] = &[
    b"\0",
    b"\n",
    b"\r\n",
    b"\t",
    b"\"",
    b"'",
    b"\\",
    b"=",
    b"[",
    b"]]",
    b"{",
    b"}",
    b",",
    b"-",
    b":",
    b";",
    b"#",
    b"%",
    b"..",
    b"/",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xae",
    b"99999999999999999999",
    b"-1",
    b"0",
    b"1e400",
    b"NaN",
    b"[[postgres]]",
    b"[[proxy]]",
    b"kind = \"haproxy\"",
];

/// `seed` mutated once by `rng`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(at),
            2 => {
                let t = TRICKY[rng.below(TRICKY.len())];
                out.splice(at..at, t.iter().copied());
            }
            3 if !out.is_empty() => {
                let from = rng.below(out.len());
                let len = rng.below(64).min(out.len() - from);
                let piece: Vec<u8> = out[from..from + len].to_vec();
                out.splice(at..at, piece);
            }
            4 if at < out.len() => {
                let end = (at + rng.below(32)).min(out.len());
                out.drain(at..end);
            }
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

/// Feeds `cases` mutations of every seed to `target`; fails naming the input that panicked.
fn fuzz(name: &str, seeds: &[Vec<u8>], cases: usize, target: impl Fn(&[u8])) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    for seed in seeds {
        for _ in 0..cases {
            let input = mutate(seed, &mut rng);
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                panic!(
                    "{name}: a panic on input {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
}

fn examples() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension().is_some_and(|x| x == "toml")).then(|| std::fs::read(p).unwrap())
        })
        .collect();
    assert!(seeds.len() >= 4, "the example plans are the seeds");
    seeds.push(b"[migration]\nname = \"x\"\nstate_dir = \"/tmp/x\"\n".to_vec());
    seeds
}

#[test]
fn the_plan_parser_never_panics_on_mutated_plans() {
    let (valid, refused) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    fuzz("plan", &examples(), 400, |input| {
        if let Ok(text) = std::str::from_utf8(input) {
            match cutover::plan::parse_str(text, std::path::Path::new("fuzz.toml")) {
                Ok(_) => valid.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                Err(_) => refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
        }
    });
    let (valid, refused) = (valid.into_inner(), refused.into_inner());
    // The mutations reach both ends of the parser: some plans stay valid, most are refused.
    assert!(
        valid > 10 && refused > 1000,
        "valid {valid}, refused {refused}"
    );
}

#[test]
fn the_parsers_of_server_and_tool_answers_never_panic() {
    let state = b"1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 app 1 web 127.0.0.1 2 0 1 1 12 1 0 0 14 0 0 0 - 8001 - 0 0 - - 0\n".to_vec();
    fuzz("haproxy_state", &[state], 3000, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = cutover::proxy::haproxy::parse_servers_state(&text, "web");
    });
    let log = b"MODIFY\tsrv/data/a.txt\0CREATE,ISDIR\tsrv/data/new dir\0MOVED_FROM\tsrv/data/old\0MOVED_TO\tsrv/data/line\nbreak\0DELETE\tsrv/data/x\0".to_vec();
    fuzz("change_log", &[log], 3000, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = cutover::files::changelog::records(&text).count();
        let _ = cutover::files::changelog::parse(&text, "/srv/data/");
    });
    let answers = vec![
        b"Number of files: 1,234 (reg: 1,000, dir: 234)\nNumber of regular files transferred: 12\nTotal file size: 9,876,543 bytes\nTotal transferred file size: 12,345 bytes\nTotal bytes sent: 45,678\nTotal bytes received: 910\n".to_vec(),
        b"    1,234,567  42%   12.34MB/s    0:00:05 (xfr#3, to-chk=10/20)".to_vec(),
        b"10.11.6-MariaDB-0+deb12u1-log".to_vec(),
        b"8.0.36-0ubuntu0.22.04.1".to_vec(),
        b"0-1-1234,1-2-55,3-7-18446744073709551615".to_vec(),
    ];
    fuzz("server_answers", &answers, 1500, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = cutover::files::rsync::parse_stats(&text);
        for line in text.lines() {
            let _ = cutover::files::rsync::parse_progress(line);
        }
        let _ = cutover::mysql::dialect::parse_version(&text);
        let _ = cutover::mysql::cutover::gtid_sequences(&text);
        let _ = cutover::mysql::cutover::gtid_count(&cutover::mysql::cutover::gtid_set(&text));
    });
}

#[test]
fn a_mutated_journal_is_read_without_a_panic() {
    let journal = br#"{"seq":1,"epoch":1,"run":"r1","at_ms":1,"entry":{"kind":"run-started","reverse":false}}
{"seq":2,"epoch":1,"run":"r1","at_ms":2,"entry":{"kind":"step-begin","step":0,"phase":"preflight","component":"postgres a"}}
{"seq":3,"epoch":1,"run":"r1","at_ms":3,"entry":{"kind":"step-done","step":0,"ms":1.5,"summary":"passed","detail":null}}
{"seq":4,"epoch":1,"run":"r1","at_ms":4,"entry":{"kind":"progress","text":"waiting"}}
"#
    .to_vec();
    fuzz("journal", &[journal], 3000, |input| {
        let text = String::from_utf8_lossy(input);
        let values: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let _ = cutover::run::last_run(&values);
    });
}

/// Real answers, encoded as servers send them: A, AAAA and CNAME records (two of them, one
/// duplicated), NXDOMAIN, REFUSED.
fn dns_answers() -> Vec<Vec<u8>> {
    use hickory_proto::op::{Message, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RData, Record};
    let owner = Name::from_ascii("app.example.org.").unwrap();
    let answer = |records: Vec<RData>, code: ResponseCode| {
        let mut m = Message::response(7, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.response_code = code;
        for r in records {
            m.add_answer(Record::from_rdata(owner.clone(), 300, r));
        }
        m.to_vec().unwrap()
    };
    vec![
        answer(
            vec![
                RData::A(A::new(192, 0, 2, 10)),
                RData::A(A::new(192, 0, 2, 11)),
                RData::A(A::new(192, 0, 2, 10)),
            ],
            ResponseCode::NoError,
        ),
        answer(
            vec![RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))],
            ResponseCode::NoError,
        ),
        answer(
            vec![RData::CNAME(CNAME(
                Name::from_ascii("New.Example.NET.").unwrap(),
            ))],
            ResponseCode::NoError,
        ),
        answer(Vec::new(), ResponseCode::NXDomain),
        answer(Vec::new(), ResponseCode::Refused),
    ]
}

#[test]
fn a_mutated_dns_answer_is_classified_without_a_panic() {
    use cutover::dns::probe::{Question, Served, classify_bytes};
    use cutover::plan::RecordType;
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], 53));
    let question = |t| Question::new("app.example.org", t, server, false);
    // The seeds read as what they are, so the mutations start from answers that parse.
    let seeds = dns_answers();
    assert_eq!(
        classify_bytes(&question(RecordType::A), &seeds[0]),
        Some(Served::Answer {
            ttl: 300,
            values: vec!["192.0.2.10".into(), "192.0.2.11".into()],
            authoritative: true
        })
    );
    assert_eq!(
        classify_bytes(&question(RecordType::Cname), &seeds[2]),
        Some(Served::Answer {
            ttl: 300,
            values: vec!["new.example.net".into()],
            authoritative: true
        })
    );
    assert_eq!(
        classify_bytes(&question(RecordType::A), &seeds[4]),
        Some(Served::Failed {
            rcode: "Query Refused".into()
        })
    );
    let parsed = std::sync::atomic::AtomicUsize::new(0);
    fuzz("dns answer", &seeds, 2000, |input| {
        for t in [RecordType::A, RecordType::Aaaa, RecordType::Cname] {
            if classify_bytes(&question(t), input).is_some() {
                parsed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    assert!(
        parsed.into_inner() > 1000,
        "the mutations still reach the classification"
    );
}

#[test]
fn provider_names_and_values_are_handled_without_a_panic() {
    use cutover_providers::{RecordSet, RecordType, relative_name};
    let seeds: Vec<Vec<u8>> = vec![
        b"app.example.org.\nA\n192.0.2.10\n 192.0.2.11 \n".to_vec(),
        b"www.Example.ORG\nCNAME\napp.example.org.\n".to_vec(),
        b"example.org\nexample.org\n2001:db8::1\n".to_vec(),
        b"[2001:db8::53]:5353\nAAAA\n::ffff:192.0.2.1\n".to_vec(),
    ];
    fuzz("provider values", &seeds, 2000, |input| {
        let text = String::from_utf8_lossy(input);
        let mut parts = text.splitn(3, '\n');
        let (name, kind, values) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let values: Vec<String> = values.lines().map(str::to_owned).collect();
        let _ = RecordType::parse(kind);
        for t in [RecordType::A, RecordType::Aaaa, RecordType::Cname] {
            let set = RecordSet::new(name, t, 300, &values);
            let xml = cutover_providers::route53::change_batch_xml(std::slice::from_ref(&set));
            // Values reach the XML document escaped: every <Value> holds text, no markup,
            // and there is one per value.
            let contents: Vec<&str> = xml
                .split("<Value>")
                .skip(1)
                .map(|rest| rest.split("</Value>").next().unwrap_or(""))
                .collect();
            assert_eq!(contents.len(), set.values.len(), "{xml}");
            assert!(contents.iter().all(|c| !c.contains('<')), "{xml}");
        }
        let _ = relative_name(name, kind);
        let _ = cutover_providers::wire::server_address(name);
    });
}

/// Answers shaped as each provider's API documents them.
fn provider_answers() -> Vec<Vec<u8>> {
    [
        // Cloudflare: a page of DNS records, and a zone.
        r#"{"success":true,"errors":[],"result":[{"id":"a1","type":"A","name":"app.example.org","content":"192.0.2.10","ttl":1,"proxied":false}],"result_info":{"page":1,"total_pages":1}}"#,
        r#"{"success":true,"errors":[],"result":{"id":"z1","name":"example.org","name_servers":["a.ns.example","b.ns.example"]}}"#,
        // deSEC: an RRset, and a domain.
        r#"{"subname":"app","name":"app.example.org.","type":"A","ttl":3600,"records":["192.0.2.10"]}"#,
        r#"{"name":"example.org","minimum_ttl":3600}"#,
        // DigitalOcean: a page of domain records.
        r#"{"domain_records":[{"id":1,"type":"A","name":"app","data":"192.0.2.10","ttl":1800}],"links":{"pages":{"next":"https://api.digitalocean.com/v2/domains/example.org/records?page=2"}},"meta":{"total":2}}"#,
        // Gandi: an RRset, and the nameservers.
        r#"{"rrset_name":"app","rrset_type":"A","rrset_ttl":10800,"rrset_values":["192.0.2.10"]}"#,
        r#"["ns1.gandi.net","ns2.gandi.net"]"#,
        // Hetzner: a zone, an action, an RRset.
        r#"{"zone":{"id":1,"name":"example.org","ttl":3600,"authoritative_nameservers":{"assigned":["hydrogen.ns.hetzner.com."]}}}"#,
        r#"{"action":{"id":7,"status":"running"}}"#,
        r#"{"rrset":{"name":"app","type":"A","ttl":null,"records":[{"value":"192.0.2.10"}]}}"#,
        // PowerDNS: a zone with its rrsets.
        r#"{"name":"example.org.","rrsets":[{"name":"app.example.org.","type":"A","ttl":60,"records":[{"content":"192.0.2.10","disabled":false}]}]}"#,
        // Route 53: a record set listing, a change, a hosted zone.
        r#"<?xml version="1.0"?><ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets><ResourceRecordSet><Name>app.example.org.</Name><Type>A</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.10</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems></ListResourceRecordSetsResponse>"#,
        r#"<?xml version="1.0"?><ChangeResourceRecordSetsResponse><ChangeInfo><Id>/change/C1</Id><Status>PENDING</Status><SubmittedAt>2026-12-07T00:00:00Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>"#,
        r#"<?xml version="1.0"?><GetHostedZoneResponse><HostedZone><Id>/hostedzone/Z1</Id><Name>example.org.</Name></HostedZone><DelegationSet><NameServers><NameServer>ns-1.awsdns-00.com</NameServer></NameServers></DelegationSet></GetHostedZoneResponse>"#,
    ]
    .iter()
    .map(|a| a.as_bytes().to_vec())
    .collect()
}

#[test]
fn mutated_provider_answers_are_decoded_without_a_panic() {
    let seeds = provider_answers();
    // Each documented answer is one the adapters read: it decodes as at least one of their
    // answer types (so the mutations start from inputs that reach the decoders' depths).
    for seed in &seeds {
        assert!(
            cutover_providers::decoded_as(seed) > 0,
            "decodes as no adapter's answer: {}",
            String::from_utf8_lossy(seed)
        );
    }
    fuzz("provider answers", &seeds, 1500, |input| {
        let _ = cutover_providers::decoded_as(input);
    });
}

/// pgoutput protocol-1 messages, cut at 0xFE as the `pgoutput` fuzz target cuts its input.
fn pgoutput_seeds() -> Vec<Vec<u8>> {
    let relation = |relid: u32, schema: &str, name: &str| {
        let mut m = vec![b'R'];
        m.extend(relid.to_be_bytes());
        m.extend(schema.as_bytes());
        m.push(0);
        m.extend(name.as_bytes());
        m.extend([0, b'd', 0, 1]);
        m
    };
    let change = |kind: u8, relid: u32| {
        let mut m = vec![kind];
        m.extend(relid.to_be_bytes());
        m.extend([b'N', 0, 0]);
        m
    };
    let mut truncate = vec![b'T'];
    truncate.extend(1u32.to_be_bytes());
    truncate.push(0);
    truncate.extend(16384u32.to_be_bytes());
    let join = |messages: Vec<Vec<u8>>| messages.join(&0xFEu8);
    vec![
        join(vec![
            vec![b'B', 0, 0, 0],
            relation(16384, "public", "writes"),
            change(b'I', 16384),
            change(b'U', 16384),
            change(b'D', 16384),
            truncate.clone(),
            vec![b'C', 0],
        ]),
        join(vec![
            vec![b'B', 0, 0, 0],
            b"O\0\0\0\0\0\0\0\0pg_1\0".to_vec(),
            change(b'I', 16384),
            vec![b'C', 0],
        ]),
    ]
}

#[test]
fn mutated_pgoutput_messages_are_counted_without_a_panic() {
    let decode = |input: &[u8]| {
        let messages: Vec<(String, Vec<u8>)> = input
            .split(|b| *b == 0xFE)
            .map(|m| ("1".to_owned(), m.to_vec()))
            .collect();
        cutover::postgres::writers::count_writes(&messages, "cutover")
    };
    let seeds = pgoutput_seeds();
    assert_eq!(decode(&seeds[0]).rows(), 4, "the seed reads as it is");
    fuzz("pgoutput", &seeds, 3000, |input| {
        let _ = decode(input).describe();
    });
    // A TRUNCATE that claims four billion relations holds one: counted once, at once.
    let mut huge = vec![b'T'];
    huge.extend(u32::MAX.to_be_bytes());
    huge.push(0);
    huge.extend(16384u32.to_be_bytes());
    let started = std::time::Instant::now();
    let audit = decode(&[vec![b'B', 0, 0, 0], huge, vec![b'C', 0]].join(&0xFEu8));
    assert_eq!(audit.rows(), 1, "{audit:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}
