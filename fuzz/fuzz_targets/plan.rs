//! A plan file: any bytes give a plan or a list of problems, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cutover::plan::parse_str(text, std::path::Path::new("fuzz.toml"));
    }
});
