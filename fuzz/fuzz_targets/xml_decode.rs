//! The v2 XML codec: never panics, and whatever it decodes encodes and decodes to the same map.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = wxpay::v2::xml::decode(data) {
        if let Ok(xml) = wxpay::v2::xml::encode(&map) {
            let again = wxpay::v2::xml::decode(xml.as_bytes()).expect("encoded XML decodes");
            assert_eq!(map, again);
        }
    }
});
