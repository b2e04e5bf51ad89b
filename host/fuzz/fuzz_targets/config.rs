//! `Config::parse` on arbitrary UTF-8: it must never panic, and when it refuses a file the error
//! is a non-empty single line (it is printed after "tinytown.toml is not valid: ").
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinytown::store::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            // Accepted files must also yield every agent's limits.
            for name in config.agents.keys() {
                let _ = config.limits_for(name);
            }
        }
        Err(e) => {
            assert!(!e.trim().is_empty(), "empty error for {text:?}");
            assert!(!e.contains('\n'), "error is not one line: {e:?}\ninput: {text:?}");
        }
    }
});
