//! A journal on disk, as a crash or a careless edit may leave it: JSON records read back.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let values: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let _ = cutover::run::last_run(&values);
});
