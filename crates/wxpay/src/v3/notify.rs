//! v3 notifications as one pure function: `(headers, raw body, now) -> typed notification`.
//!
//! The checks run in the order that costs least and believes least: size, signature type,
//! `WECHATPAY/SIGNTEST/` probe, time window, RSA signature over the raw body, and only then JSON
//! decoding and AES-256-GCM decryption. Nothing in the body is read before the signature holds.
//!
//! [`sign_notification`] is the other side (used by the simulator and by tests), so that both
//! directions share one implementation.

use http::HeaderMap;
use time::OffsetDateTime;

use crate::error::{DecodeError, Error, SignatureError};
use crate::keys::RsaPrivateKey;
use crate::v3::aead::ApiV3Key;
use crate::v3::auth::{SCHEME, response_message};
use crate::v3::models::{
    AEAD_AES_256_GCM, EncryptedResource, NotificationEnvelope, PartnerRefundResource,
    PartnerTransaction, RefundResource, Transaction,
};
use crate::v3::transfers::{Authorization, TransferBillResource};
use crate::v3::verifier::{SignedHeaders, Verifier, verify_signed};

/// Notification bodies larger than this are refused before anything else.
pub const MAX_NOTIFICATION_BYTES: usize = 64 * 1024;

/// The exact answer WeChat expects on failure (with a 4xx/5xx status); success is 200/204.
pub const FAIL_ACK: &str = r#"{"code":"FAIL","message":"失败"}"#;

/// A verified, decrypted payment notification (`TRANSACTION.SUCCESS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentNotification {
    /// Event id.
    pub id: String,
    /// When WeChat made the event.
    pub create_time: OffsetDateTime,
    /// `TRANSACTION.SUCCESS`.
    pub event_type: String,
    /// E.g. `支付成功`.
    pub summary: String,
    /// The transaction.
    pub transaction: Transaction,
}

/// A verified, decrypted refund notification (`REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundNotification {
    /// Event id.
    pub id: String,
    /// When WeChat made the event.
    pub create_time: OffsetDateTime,
    /// `REFUND.*`.
    pub event_type: String,
    /// E.g. `退款成功`.
    pub summary: String,
    /// The refund.
    pub refund: RefundResource,
}

/// A verified, decrypted payment notification of a service provider's sub-merchant order
/// (`TRANSACTION.SUCCESS` whose resource has `sp_mchid` and `sub_mchid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerPaymentNotification {
    /// Event id.
    pub id: String,
    /// When WeChat made the event.
    pub create_time: OffsetDateTime,
    /// `TRANSACTION.SUCCESS`.
    pub event_type: String,
    /// E.g. `支付成功`.
    pub summary: String,
    /// The transaction (the shape of the partner query).
    pub transaction: PartnerTransaction,
}

/// A verified, decrypted refund notification of a sub-merchant's refund (resource with
/// `sp_mchid` and `sub_mchid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerRefundNotification {
    /// Event id.
    pub id: String,
    /// When WeChat made the event.
    pub create_time: OffsetDateTime,
    /// `REFUND.*`.
    pub event_type: String,
    /// E.g. `退款成功`.
    pub summary: String,
    /// The refund.
    pub refund: PartnerRefundResource,
}

/// Either kind of notification, direct or in service-provider (partner) mode. The partner
/// shapes are recognised by the `sp_mchid` of the decrypted resource.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// A payment.
    Payment(PaymentNotification),
    /// A refund.
    Refund(RefundNotification),
    /// A payment of a sub-merchant's order (partner mode).
    PartnerPayment(PartnerPaymentNotification),
    /// A refund of a sub-merchant's order (partner mode).
    PartnerRefund(PartnerRefundNotification),
    /// A merchant transfer bill became final (`MCHTRANSFER.BILL.FINISHED`).
    Transfer(TransferNotification),
    /// A transfer authorization was confirmed or closed (`MCHTRANSFER.AUTHORIZATION.*`).
    TransferAuthorization(TransferAuthorizationNotification),
}

/// A verified, decrypted transfer-bill notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferNotification {
    /// Event id.
    pub id: String,
    /// When WeChat made the event.
    pub create_time: time::OffsetDateTime,
    /// `MCHTRANSFER.BILL.FINISHED`.
    pub event_type: String,
    /// `商家转账单据终态通知`.
    pub summary: String,
    /// The bill in its final state.
    pub bill: TransferBillResource,
}

/// A verified, decrypted transfer-authorization notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferAuthorizationNotification {
    /// Event id.
    pub id: String,
    /// When WeChat made the event.
    pub create_time: time::OffsetDateTime,
    /// `MCHTRANSFER.AUTHORIZATION.CONFIRMED` or `.CLOSED`.
    pub event_type: String,
    /// As sent.
    pub summary: String,
    /// The authorization.
    pub authorization: Authorization,
}

/// What [`parse_notification`] needs to believe a notification.
#[derive(Debug, Clone, Copy)]
pub struct NotificationKeys<'a> {
    /// Platform certificates, the WeChat Pay public key, or both.
    pub verifier: &'a dyn Verifier,
    /// The APIv3 key.
    pub api_v3_key: &'a ApiV3Key,
    /// Allowed clock skew in seconds (300 by default, see
    /// [`DEFAULT_WINDOW_SECS`](crate::v3::verifier::DEFAULT_WINDOW_SECS)).
    pub window_secs: i64,
}

/// Verifies, decrypts and parses a v3 notification.
///
/// `now` is Unix seconds, injected so that replay tests can use any time.
///
/// # Errors
/// [`Error::Decode`] for an oversized body or a body of the wrong shape,
/// [`Error::Signature`] when a header is missing, the type is not RSA2048, the signature is a
/// probe, the timestamp is outside the window, the serial is unknown or the signature fails,
/// [`Error::Crypto`] when the resource does not decrypt (wrong key, tampered ciphertext).
pub fn parse_notification(
    keys: NotificationKeys<'_>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Notification, Error> {
    if body.len() > MAX_NOTIFICATION_BYTES {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit: MAX_NOTIFICATION_BYTES,
        }
        .into());
    }
    let signed = SignedHeaders::from_headers(headers)?;
    if signed.signature_type.is_none() {
        // Notifications always name their signature type; a missing one is not WeChat's.
        return Err(SignatureError::Missing("Wechatpay-Signature-Type").into());
    }
    verify_signed(keys.verifier, &signed, body, now, keys.window_secs)?;
    decrypt_verified(keys.api_v3_key, body)
}

/// Decrypts and parses a notification body whose signature has already been verified.
///
/// # Errors
/// As [`parse_notification`], without the signature checks.
pub fn decrypt_verified(api_v3_key: &ApiV3Key, body: &[u8]) -> Result<Notification, Error> {
    let envelope: NotificationEnvelope =
        serde_json::from_slice(body).map_err(|e| DecodeError::json(&e))?;
    if envelope.resource_type != "encrypt-resource" {
        return Err(DecodeError::invalid("resource_type", "expected encrypt-resource").into());
    }
    if envelope.resource.algorithm != AEAD_AES_256_GCM {
        return Err(DecodeError::invalid("resource.algorithm", "expected AEAD_AES_256_GCM").into());
    }
    let resource = &envelope.resource;
    let plain = api_v3_key.decrypt(
        &resource.nonce,
        resource.associated_data.as_deref().unwrap_or(""),
        &resource.ciphertext,
    )?;
    let NotificationEnvelope {
        id,
        create_time,
        event_type,
        summary,
        ..
    } = envelope;
    if event_type.starts_with("MCHTRANSFER.BILL.") {
        let bill: TransferBillResource =
            serde_json::from_slice(&plain).map_err(|e| DecodeError::json(&e))?;
        return Ok(Notification::Transfer(TransferNotification {
            id,
            create_time,
            event_type,
            summary,
            bill,
        }));
    }
    if event_type.starts_with("MCHTRANSFER.AUTHORIZATION.") {
        let authorization: Authorization =
            serde_json::from_slice(&plain).map_err(|e| DecodeError::json(&e))?;
        return Ok(Notification::TransferAuthorization(
            TransferAuthorizationNotification {
                id,
                create_time,
                event_type,
                summary,
                authorization,
            },
        ));
    }
    let partner = serde_json::from_slice::<serde_json::Value>(&plain)
        .map_err(|e| DecodeError::json(&e))?
        .get("sp_mchid")
        .is_some();
    if partner && event_type.starts_with("TRANSACTION.") {
        let transaction: PartnerTransaction =
            serde_json::from_slice(&plain).map_err(|e| DecodeError::json(&e))?;
        Ok(Notification::PartnerPayment(PartnerPaymentNotification {
            id,
            create_time,
            event_type,
            summary,
            transaction,
        }))
    } else if partner && event_type.starts_with("REFUND.") {
        let refund: PartnerRefundResource =
            serde_json::from_slice(&plain).map_err(|e| DecodeError::json(&e))?;
        Ok(Notification::PartnerRefund(PartnerRefundNotification {
            id,
            create_time,
            event_type,
            summary,
            refund,
        }))
    } else if event_type.starts_with("TRANSACTION.") {
        let transaction: Transaction =
            serde_json::from_slice(&plain).map_err(|e| DecodeError::json(&e))?;
        Ok(Notification::Payment(PaymentNotification {
            id,
            create_time,
            event_type,
            summary,
            transaction,
        }))
    } else if event_type.starts_with("REFUND.") {
        let refund: RefundResource =
            serde_json::from_slice(&plain).map_err(|e| DecodeError::json(&e))?;
        Ok(Notification::Refund(RefundNotification {
            id,
            create_time,
            event_type,
            summary,
            refund,
        }))
    } else {
        Err(DecodeError::invalid(
            "event_type",
            "not a TRANSACTION.*, REFUND.* or MCHTRANSFER.* event",
        )
        .into())
    }
}

/// A signed notification ready to be POSTed: the headers to send and the body.
#[derive(Clone, Debug)]
pub struct SignedNotification {
    /// `Wechatpay-Timestamp`, `-Nonce`, `-Signature`, `-Serial`, `-Signature-Type`,
    /// `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
}

/// Who signs a notification in [`sign_notification`]: the merchant's APIv3 key (encryption)
/// and WeChat Pay's signing key with its serial.
#[derive(Clone, Copy)]
pub struct NotificationSigner<'a> {
    /// Encrypts the resource.
    pub api_v3_key: &'a ApiV3Key,
    /// Signs the message (WeChat Pay's platform or public-key key).
    pub signing_key: &'a RsaPrivateKey,
    /// Its serial (certificate serial or `PUB_KEY_ID_...`), sent as `Wechatpay-Serial`.
    pub serial: &'a str,
}

/// What a notification says, for [`sign_notification`].
#[derive(Clone, Copy)]
pub struct NotificationEvent<'a> {
    /// The envelope's `id`.
    pub id: &'a str,
    /// The envelope's `create_time`.
    pub create_time: OffsetDateTime,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, ...
    pub event_type: &'a str,
    /// `支付成功`, ...
    pub summary: &'a str,
    /// `transaction` or `refund` (also the AAD).
    pub original_type: &'a str,
    /// The plaintext resource (JSON).
    pub resource_json: &'a [u8],
}

/// Builds a notification the way WeChat Pay does: encrypts the event's resource with the APIv3 key
/// (12-character nonce, AAD = `original_type`), wraps it in the envelope and signs
/// `timestamp\nnonce\nbody\n` with the signer's key, whose serial goes in `Wechatpay-Serial`.
///
/// # Errors
/// When encryption or signing fails.
pub fn sign_notification(
    signer: &NotificationSigner<'_>,
    event: &NotificationEvent<'_>,
    timestamp: i64,
) -> Result<SignedNotification, Error> {
    let NotificationSigner {
        api_v3_key,
        signing_key,
        serial,
    } = *signer;
    let NotificationEvent {
        id,
        create_time,
        event_type,
        summary,
        original_type,
        resource_json,
    } = *event;
    let resource_nonce = crate::nonce::random_string(12);
    let ciphertext = api_v3_key.encrypt(&resource_nonce, original_type, resource_json)?;
    let envelope = NotificationEnvelope {
        id: id.to_owned(),
        create_time,
        resource_type: "encrypt-resource".to_owned(),
        event_type: event_type.to_owned(),
        summary: summary.to_owned(),
        resource: EncryptedResource {
            algorithm: AEAD_AES_256_GCM.to_owned(),
            ciphertext,
            associated_data: Some(original_type.to_owned()),
            nonce: resource_nonce,
            original_type: Some(original_type.to_owned()),
        },
    };
    let body = serde_json::to_string(&envelope).map_err(|e| DecodeError::json(&e))?;
    let timestamp = timestamp.to_string();
    let nonce = crate::nonce::nonce();
    let signature =
        signing_key.sign_sha256_base64(&response_message(&timestamp, &nonce, body.as_bytes()))?;
    Ok(SignedNotification {
        headers: vec![
            ("Wechatpay-Timestamp", timestamp),
            ("Wechatpay-Nonce", nonce),
            ("Wechatpay-Signature", signature),
            ("Wechatpay-Serial", serial.to_owned()),
            ("Wechatpay-Signature-Type", SCHEME.to_owned()),
            ("Content-Type", "application/json".to_owned()),
        ],
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::D5_KEY;
    use crate::v3::models::TradeState;
    use crate::v3::verifier::{CertificateStore, DEFAULT_WINDOW_SECS, PublicKeyVerifier};

    const PK_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";
    const TX: &str = r#"{"appid":"wx8888888888888888","mchid":"1230000109","out_trade_no":"T20261124000001","transaction_id":"4200000000202611240000000001","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","success_time":"2026-11-24T10:00:00+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::from_pem(D5_KEY).unwrap()
    }

    fn api_key() -> ApiV3Key {
        ApiV3Key::new("0123456789ABCDEFGHIJKLMNOPQRSTUV").unwrap()
    }

    fn to_headers(n: &SignedNotification) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &n.headers {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn signed(ts: i64) -> SignedNotification {
        sign_notification(
            &NotificationSigner {
                api_v3_key: &api_key(),
                signing_key: &key(),
                serial: PK_ID,
            },
            &NotificationEvent {
                id: "EV-1",
                create_time: time::macros::datetime!(2026-11-24 10:00:01 +8),
                event_type: "TRANSACTION.SUCCESS",
                summary: "支付成功",
                original_type: "transaction",
                resource_json: TX.as_bytes(),
            },
            ts,
        )
        .unwrap()
    }

    fn parse(n: &SignedNotification, headers: &HeaderMap, now: i64) -> Result<Notification, Error> {
        let verifier = PublicKeyVerifier::new(PK_ID, key().public_key().clone());
        let api_key = api_key();
        let keys = NotificationKeys {
            verifier: &verifier,
            api_v3_key: &api_key,
            window_secs: DEFAULT_WINDOW_SECS,
        };
        parse_notification(keys, headers, n.body.as_bytes(), now)
    }

    #[test]
    fn a_signed_payment_notification_round_trips() {
        let n = signed(1_700_000_000);
        let Notification::Payment(p) = parse(&n, &to_headers(&n), 1_700_000_100).unwrap() else {
            panic!("expected a payment");
        };
        assert_eq!(p.id, "EV-1");
        assert_eq!(p.transaction.trade_state, TradeState::Success);
        assert_eq!(p.transaction.amount.total, 100);
    }

    #[test]
    fn partner_notifications_are_recognised_by_sp_mchid() {
        let sign = |event_type: &str, original_type: &str, json: &str| {
            sign_notification(
                &NotificationSigner {
                    api_v3_key: &api_key(),
                    signing_key: &key(),
                    serial: PK_ID,
                },
                &NotificationEvent {
                    id: "EV-2",
                    create_time: time::macros::datetime!(2026-11-24 10:00:01 +8),
                    event_type,
                    summary: "",
                    original_type,
                    resource_json: json.as_bytes(),
                },
                1_700_000_000,
            )
            .unwrap()
        };
        let tx = r#"{"sp_appid":"wxsp","sp_mchid":"1230000109","sub_appid":"wxsub","sub_mchid":"1900000109","out_trade_no":"P20261124000001","transaction_id":"4200000000202611240000000002","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","success_time":"2026-11-24T10:00:00+08:00","payer":{"sub_openid":"o_sub"},"amount":{"total":100,"payer_total":100,"currency":"CNY"}}"#;
        let n = sign("TRANSACTION.SUCCESS", "transaction", tx);
        let Notification::PartnerPayment(p) = parse(&n, &to_headers(&n), 1_700_000_000).unwrap()
        else {
            panic!("expected a partner payment");
        };
        assert_eq!(p.transaction.sub_mchid, "1900000109");
        assert_eq!(p.transaction.sub_appid.as_deref(), Some("wxsub"));
        assert_eq!(
            p.transaction.payer.unwrap().sub_openid.as_deref(),
            Some("o_sub")
        );
        let refund = r#"{"sp_mchid":"1230000109","sub_mchid":"1900000109","out_trade_no":"P20261124000001","transaction_id":"4200000000202611240000000002","out_refund_no":"R1","refund_id":"50300000","refund_status":"SUCCESS","user_received_account":"支付用户零钱","amount":{"total":100,"refund":40,"payer_total":100,"payer_refund":40}}"#;
        let n = sign("REFUND.SUCCESS", "refund", refund);
        let Notification::PartnerRefund(r) = parse(&n, &to_headers(&n), 1_700_000_000).unwrap()
        else {
            panic!("expected a partner refund");
        };
        assert_eq!(r.refund.sub_mchid, "1900000109");
        assert_eq!(r.refund.amount.refund, 40);
    }

    #[test]
    fn stale_probe_and_tampered_notifications_are_refused() {
        let n = signed(1_700_000_000);
        let headers = to_headers(&n);
        assert!(matches!(
            parse(&n, &headers, 1_700_000_300),
            Err(Error::Signature(SignatureError::Stale { .. }))
        ));

        let mut probe = headers.clone();
        probe.insert(
            "Wechatpay-Signature",
            "WECHATPAY/SIGNTEST/abc".parse().unwrap(),
        );
        assert!(matches!(
            parse(&n, &probe, 1_700_000_000),
            Err(Error::Signature(SignatureError::Probe))
        ));

        let mut tampered = n.clone();
        tampered.body = tampered.body.replace("EV-1", "EV-2");
        assert!(matches!(
            parse(&tampered, &headers, 1_700_000_000),
            Err(Error::Signature(SignatureError::Mismatch))
        ));

        let mut other_serial = headers.clone();
        other_serial.insert(
            "Wechatpay-Serial",
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".parse().unwrap(),
        );
        assert!(matches!(
            parse(&n, &other_serial, 1_700_000_000),
            Err(Error::Signature(SignatureError::UnknownSerial(_)))
        ));

        let mut no_type = headers.clone();
        no_type.remove("Wechatpay-Signature-Type");
        assert!(matches!(
            parse(&n, &no_type, 1_700_000_000),
            Err(Error::Signature(SignatureError::Missing(_)))
        ));

        let mut other_type = headers;
        other_type.insert(
            "Wechatpay-Signature-Type",
            "WECHATPAY2-SM2-WITH-SM3".parse().unwrap(),
        );
        assert!(matches!(
            parse(&n, &other_type, 1_700_000_000),
            Err(Error::Signature(SignatureError::UnsupportedType(_)))
        ));
    }

    #[test]
    fn a_signed_body_with_a_wrong_api_v3_key_fails_decryption() {
        let n = signed(1_700_000_000);
        let verifier = PublicKeyVerifier::new(PK_ID, key().public_key().clone());
        let other = ApiV3Key::new("ZYXWVUTSRQPONMLKJIHGFEDCBA987654").unwrap();
        let keys = NotificationKeys {
            verifier: &verifier,
            api_v3_key: &other,
            window_secs: DEFAULT_WINDOW_SECS,
        };
        let err = parse_notification(keys, &to_headers(&n), n.body.as_bytes(), 1_700_000_000)
            .unwrap_err();
        assert!(matches!(err, Error::Crypto(crate::CryptoError::Decrypt)));
    }

    #[test]
    fn an_oversized_body_is_refused_before_verification() {
        let body = vec![b' '; MAX_NOTIFICATION_BYTES + 1];
        let verifier = CertificateStore::new();
        let api_key = api_key();
        let keys = NotificationKeys {
            verifier: &verifier,
            api_v3_key: &api_key,
            window_secs: DEFAULT_WINDOW_SECS,
        };
        let err = parse_notification(keys, &HeaderMap::new(), &body, 0).unwrap_err();
        assert!(matches!(err, Error::Decode(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn refund_notifications_are_typed() {
        let resource = r#"{"mchid":"1230000109","out_trade_no":"T1","transaction_id":"42","out_refund_no":"R1","refund_id":"50","refund_status":"SUCCESS","success_time":"2026-11-24T10:00:00+08:00","user_received_account":"支付用户零钱","amount":{"total":100,"refund":40,"payer_total":100,"payer_refund":40}}"#;
        let n = sign_notification(
            &NotificationSigner {
                api_v3_key: &api_key(),
                signing_key: &key(),
                serial: PK_ID,
            },
            &NotificationEvent {
                id: "EV-2",
                create_time: time::macros::datetime!(2026-11-24 10:00:01 +8),
                event_type: "REFUND.SUCCESS",
                summary: "退款成功",
                original_type: "refund",
                resource_json: resource.as_bytes(),
            },
            1_700_000_000,
        )
        .unwrap();
        let Notification::Refund(r) = parse(&n, &to_headers(&n), 1_700_000_000).unwrap() else {
            panic!("expected a refund");
        };
        assert_eq!(r.refund.amount.refund, 40);
        assert_eq!(r.event_type, "REFUND.SUCCESS");
    }

    #[test]
    fn transfer_notifications_are_typed() {
        let resource = r#"{"out_bill_no":"PAYOUT1","transfer_bill_no":"1330000114850082502050044930362032","state":"SUCCESS","mch_id":"1230000109","transfer_amount":2000,"openid":"o-user","create_time":"2026-11-24T10:00:00+08:00","update_time":"2026-11-24T10:05:00+08:00"}"#;
        let n = sign_notification(
            &NotificationSigner {
                api_v3_key: &api_key(),
                signing_key: &key(),
                serial: PK_ID,
            },
            &NotificationEvent {
                id: "EV-3",
                create_time: time::macros::datetime!(2026-11-24 10:05:01 +8),
                event_type: "MCHTRANSFER.BILL.FINISHED",
                summary: "商家转账单据终态通知",
                original_type: "mch_payment",
                resource_json: resource.as_bytes(),
            },
            1_700_000_000,
        )
        .unwrap();
        let Notification::Transfer(t) = parse(&n, &to_headers(&n), 1_700_000_000).unwrap() else {
            panic!("expected a transfer");
        };
        assert_eq!(t.bill.out_bill_no, "PAYOUT1");
        assert_eq!(t.bill.transfer_amount, 2000);
        assert_eq!(t.bill.state, crate::v3::transfers::TransferState::Success);
        assert_eq!(t.bill.fail_reason, None);
    }
}
