//! DNS providers' raw API answers (JSON for Cloudflare, deSEC, DigitalOcean, Gandi, Hetzner and
//! PowerDNS; XML for Route 53), decoded into every answer type each adapter reads, as it reads
//! them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cutover_providers::decoded_as(data);
});
