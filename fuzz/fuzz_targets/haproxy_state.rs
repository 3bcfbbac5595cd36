//! HAProxy's answer to `show servers state`, as a proxy (or something pretending to be one)
//! might send it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cutover::proxy::haproxy::parse_servers_state(&text, "web");
});
