//! What DNS providers' APIs hand back, after their JSON or XML is decoded into typed fields:
//! record names, types and values (normalised, made relative to a zone), server addresses,
//! and the Route 53 change document built from them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use cutover_providers::{RecordSet, RecordType, relative_name};
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (name, kind, values) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let values: Vec<String> = values.lines().map(str::to_owned).collect();
    let _ = RecordType::parse(kind);
    for t in [RecordType::A, RecordType::Aaaa, RecordType::Cname] {
        for v in &values {
            let _ = t.normalize(v);
        }
        let set = RecordSet::new(name, t, 300, &values);
        let _ = set.values_with_dot();
        let _ = cutover_providers::route53::change_batch_xml(&[set]);
    }
    let _ = relative_name(name, kind);
    let _ = cutover_providers::wire::server_address(name);
});
