//! The change log a watcher on the source host wrote (file names are anyone's bytes).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cutover::files::changelog::records(&text).count();
    let _ = cutover::files::changelog::parse(&text, "/srv/data/");
});
