//! The config loader: never panics on any YAML, and what it accepts prints (`config check`)
//! as YAML that loads back as the same configuration, but for secrets, which print redacted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = berth::config::from_yaml(text) else { return };
    let printed = config.to_yaml();
    let mut again = berth::config::from_yaml(&printed).unwrap_or_else(|e| panic!("{printed}\n{e}"));
    let mut config = config;
    for s3 in [&mut config.storage.s3, &mut again.storage.s3].into_iter().flatten() {
        assert!(!printed.contains(&format!("secret_key: {}", s3.secret_key)) || s3.secret_key == berth::config::REDACTED);
        s3.secret_key = berth::config::REDACTED.to_owned();
    }
    for proxy in config.proxy.iter_mut().chain(again.proxy.iter_mut()) {
        if let Some(password) = &mut proxy.password {
            assert!(password == berth::config::REDACTED || !printed.contains(&format!("password: {password}")));
            berth::config::REDACTED.clone_into(password);
        }
    }
    assert_eq!(again, config, "{printed}");
});
