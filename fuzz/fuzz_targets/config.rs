//! The config loader: never panics on any YAML, and what it accepts prints (`config check`)
//! as YAML that loads back as the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = berth::config::from_yaml(text) else { return };
    let printed = config.to_yaml();
    let again = berth::config::from_yaml(&printed).unwrap_or_else(|e| panic!("{printed}\n{e}"));
    assert_eq!(again, config, "{printed}");
});
