//! `wxpay pay-sign v3` and `wxpay pay-sign v2`: the `wx.requestPayment` parameters.

use std::io::Write;

use wxpay::RequestPayment;
use wxpay::pay_params;
use wxpay::v2::SignType;

use crate::cli::{PaySignCommon, PaySignV2Args, PaySignV3Args};
use crate::commands::sign::emit;
use crate::failure::Failure;
use crate::input;

/// The checked common inputs, with the defaults filled in.
struct Resolved {
    timestamp: i64,
    nonce: String,
}

fn resolve(common: &PaySignCommon) -> Result<Resolved, Failure> {
    input::check_token(&common.appid, "--appid", 64, &[])?;
    input::check_token(&common.prepay_id, "--prepay-id", 128, &[])?;
    if common.prepay_id.starts_with("prepay_id=") {
        return Err(Failure::input(
            "--prepay-id takes the prepay_id itself; `package` gets its `prepay_id=` prefix added",
        ));
    }
    let nonce = common.nonce.clone().unwrap_or_else(wxpay::nonce::nonce);
    // nonceStr is at most 32 characters (A.12, B.17).
    input::check_token(&nonce, "--nonce", 32, &[])?;
    let timestamp = match common.timestamp {
        Some(t) => t,
        None => input::now()?,
    };
    Ok(Resolved { timestamp, nonce })
}

/// `paySign` with the merchant RSA key.
///
/// # Errors
/// [`Failure::Input`] for an unreadable key or an unusable parameter.
pub fn v3(args: &PaySignV3Args, out: &mut dyn Write) -> Result<(), Failure> {
    let r = resolve(&args.common)?;
    let key = input::private_key(&args.private_key)?;
    let params = pay_params::v3(
        &key,
        &args.common.appid,
        &args.common.prepay_id,
        r.timestamp,
        &r.nonce,
    )
    .map_err(|e| Failure::input(format!("signing failed: {e}")))?;
    print(out, &params)
}

/// `paySign` with the API v2 key.
///
/// # Errors
/// [`Failure::Input`] for a key that is not 32 visible characters or an unusable parameter.
pub fn v2(args: &PaySignV2Args, out: &mut dyn Write) -> Result<(), Failure> {
    crate::input::check_v2_key(&args.key)?;
    let r = resolve(&args.common)?;
    let sign_type = if args.hmac {
        SignType::HmacSha256
    } else {
        SignType::Md5
    };
    let params = pay_params::v2(
        &args.key,
        &args.common.appid,
        &args.common.prepay_id,
        r.timestamp,
        &r.nonce,
        sign_type,
    );
    print(out, &params)
}

fn print(out: &mut dyn Write, params: &RequestPayment) -> Result<(), Failure> {
    let json = serde_json::to_string_pretty(params)
        .map_err(|e| Failure::input(format!("cannot encode the parameters: {e}")))?;
    emit(out, &json)
}
