//! The merchant's identifiers, validated once when they are made: [`OutTradeNo`],
//! [`OutRefundNo`] and [`OpenId`]. A request that holds one needs no further check, and an
//! order number cannot be passed where a refund number or an openid is expected.
//!
//! Each is made with `TryFrom<&str>`, `TryFrom<String>` or `str::parse`, and is a plain JSON
//! string on the wire (deserializing validates too).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An identifier that breaks its rule. The message names the field and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidId {
    field: &'static str,
    message: String,
}

impl InvalidId {
    /// The field, e.g. `out_trade_no`.
    #[must_use]
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl From<InvalidId> for crate::Error {
    fn from(err: InvalidId) -> Self {
        crate::Error::InvalidRequest(err.message)
    }
}

fn check_charset(
    field: &'static str,
    value: &str,
    len: std::ops::RangeInclusive<usize>,
    extra: &[u8],
    allowed: &str,
) -> Result<(), InvalidId> {
    if !len.contains(&value.len()) {
        return Err(InvalidId {
            field,
            message: format!(
                "{field} must have {} to {} characters, not {}",
                len.start(),
                len.end(),
                value.len()
            ),
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err(InvalidId {
            field,
            message: format!("{field} may contain only {allowed}"),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the rule.
            ///
            /// # Errors
            /// [`InvalidId`] naming the rule broken.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                $check(&value)?;
                Ok($name(value))
            }

            /// The identifier.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier, owned.
            #[must_use]
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                $name::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, InvalidId> {
                $name::parse(s)
            }
        }

        impl TryFrom<&String> for $name {
            type Error = InvalidId;
            fn try_from(s: &String) -> Result<Self, InvalidId> {
                $name::parse(s.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                $name::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                $name::parse(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_out_trade_no(value: &str) -> Result<(), InvalidId> {
    check_charset(
        "out_trade_no",
        value,
        6..=32,
        b"_-|*",
        "0-9 A-Z a-z _ - | *",
    )
}

fn check_out_refund_no(value: &str) -> Result<(), InvalidId> {
    check_charset(
        "out_refund_no",
        value,
        1..=64,
        b"_-|*@",
        "0-9 A-Z a-z _ - | * @",
    )
}

fn check_openid(value: &str) -> Result<(), InvalidId> {
    crate::validate::text("openid", value, 1, 128).map_err(|err| InvalidId {
        field: "openid",
        message: match err {
            crate::Error::InvalidRequest(m) => m,
            other => other.to_string(),
        },
    })
}

id_type!(
    /// The merchant's order number (`out_trade_no`): 6–32 characters of `[0-9A-Za-z_-|*]`,
    /// unique per merchant. The same rule in API v2 and v3.
    OutTradeNo,
    check_out_trade_no
);

id_type!(
    /// The merchant's refund number (`out_refund_no`): 1–64 characters of `[0-9A-Za-z_-|*@]`.
    /// Retrying a refund with the same one is harmless at WeChat.
    OutRefundNo,
    check_out_refund_no
);

fn check_out_bill_no(value: &str) -> Result<(), InvalidId> {
    check_charset("out_bill_no", value, 1..=32, b"", "0-9 A-Z a-z")
}

id_type!(
    /// The merchant's transfer bill number (`out_bill_no`, 商户单号) of a merchant transfer, or
    /// its `out_authorization_no`: 1–32 characters of `[0-9A-Za-z]`, unique per merchant.
    /// Retrying a transfer with the same one is the only safe retry.
    OutBillNo,
    check_out_bill_no
);

fn check_sub_mchid(value: &str) -> Result<(), InvalidId> {
    check_charset("sub_mchid", value, 1..=32, b"", "0-9 A-Z a-z")
}

fn check_app_id(value: &str) -> Result<(), InvalidId> {
    check_charset("appid", value, 1..=32, b"_-", "0-9 A-Z a-z _ -")
}

id_type!(
    /// A sub-merchant's merchant id (`sub_mchid`, 特约商户号) under a service provider: 1–32
    /// characters of `[0-9A-Za-z]` (real ones are 10 digits).
    SubMchid,
    check_sub_mchid
);

id_type!(
    /// A mini program's (or official account's) `appid`, e.g. a sub-merchant's `sub_appid`:
    /// 1–32 characters of `[0-9A-Za-z_-]`.
    AppId,
    check_app_id
);

id_type!(
    /// A user's `openid` under an appid: 1–128 characters, no control characters.
    OpenId,
    check_openid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_no_rule() {
        assert!(OutTradeNo::try_from("A-b_c|d*9").is_ok());
        assert_eq!(
            OutTradeNo::try_from("12345").unwrap_err().to_string(),
            "out_trade_no must have 6 to 32 characters, not 5"
        );
        assert!(OutTradeNo::try_from("x".repeat(33)).is_err());
        assert_eq!(
            "order#123".parse::<OutTradeNo>().unwrap_err().to_string(),
            "out_trade_no may contain only 0-9 A-Z a-z _ - | *"
        );
    }

    #[test]
    fn out_refund_no_and_openid_rules() {
        assert!(OutRefundNo::try_from("R@1").is_ok());
        assert!(OutRefundNo::try_from("R 1").is_err());
        assert!(OutRefundNo::try_from("").is_err());
        assert!(OutRefundNo::try_from("r".repeat(65)).is_err());
        assert!(OpenId::try_from("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").is_ok());
        assert!(OpenId::try_from("").is_err());
        assert!(OpenId::try_from("a\u{0}").is_err());
        let err = OpenId::try_from("").unwrap_err();
        assert_eq!(err.field(), "openid");
        assert!(
            matches!(crate::Error::from(err), crate::Error::InvalidRequest(m) if m.contains("openid"))
        );
    }

    #[test]
    fn json_is_a_plain_string_and_is_validated() {
        let no = OutTradeNo::try_from("T1234567").unwrap();
        assert_eq!(serde_json::to_string(&no).unwrap(), r#""T1234567""#);
        assert_eq!(
            serde_json::from_str::<OutTradeNo>(r#""T1234567""#).unwrap(),
            no
        );
        assert!(serde_json::from_str::<OutTradeNo>(r#""T1""#).is_err());
        assert_eq!(format!("{no} {no:?}"), r#"T1234567 "T1234567""#);
    }
}
