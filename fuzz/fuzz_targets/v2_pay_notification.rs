//! The v2 payment notification parser (XML, MD5 / HMAC-SHA256 signature): never panics, and
//! nothing unsigned is believed.
#![no_main]

use libfuzzer_sys::fuzz_target;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = wxpay::v2::notify::parse_pay_notification(data, KEY) {
        // Accepted means signed with the key.
        let map = wxpay::v2::xml::decode(data).expect("accepted XML decodes");
        assert!(wxpay::v2::sign::verify_map(&map, KEY).is_ok());
        let _ = n.ensure_merchant("wx0000000000000000", "1900000000");
    }
});
