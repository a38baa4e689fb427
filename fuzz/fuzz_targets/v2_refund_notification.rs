//! The v2 refund notification parser (XML with an AES-256-ECB `req_info`): never panics, both on
//! raw bodies and on `req_info` encrypted with the key (so that the inner XML is reached).
#![no_main]

use libfuzzer_sys::fuzz_target;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let _ = wxpay::v2::notify::parse_refund_notification(data, KEY);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wxpay::v2::notify::decrypt_req_info(KEY, text);
        if let Ok(req_info) = wxpay::v2::notify::encrypt_req_info(KEY, text) {
            let body = format!(
                "<xml><return_code>SUCCESS</return_code><appid>wx0000000000000000</appid>\
                 <mch_id>1900000000</mch_id><nonce_str>abc</nonce_str><req_info><![CDATA[{req_info}]]></req_info></xml>"
            );
            let _ = wxpay::v2::notify::parse_refund_notification(body.as_bytes(), KEY);
        }
    }
});
