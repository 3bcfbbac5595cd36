//! A DNS server's answer in wire format, classified for an A, AAAA and CNAME question: every
//! byte of it comes from the network (an authoritative server, a resolver, or whoever answers
//! in their place).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use cutover::dns::probe::{Question, classify_bytes};
    use cutover::plan::RecordType;
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], 53));
    for t in [RecordType::A, RecordType::Aaaa, RecordType::Cname] {
        let _ = classify_bytes(&Question::new("app.example.org", t, server, false), data);
    }
});
