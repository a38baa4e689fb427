//! `POST /pay/downloadbill`: the trade bill of a day.

use time::Date;

use super::shared::{base_params, put};
use crate::error::Error;
use crate::ids::SubMchid;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;
use crate::validate;

/// `bill_type` of `downloadbill`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BillType {
    /// `ALL`: payments and refunds.
    #[default]
    All,
    /// `SUCCESS`: successful payments.
    Success,
    /// `REFUND`: refunds.
    Refund,
    /// `RECHARGE_REFUND`: refunds of recharge coupons.
    RechargeRefund,
}

impl BillType {
    /// The wire value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            BillType::All => "ALL",
            BillType::Success => "SUCCESS",
            BillType::Refund => "REFUND",
            BillType::RechargeRefund => "RECHARGE_REFUND",
        }
    }
}

/// `POST /pay/downloadbill`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadBillRequest {
    /// The day (GMT+8) of the bill; it exists after about 09:00 the next day.
    pub bill_date: Date,
    /// Which trades.
    pub bill_type: BillType,
    /// Ask for a gzip body (`tar_type=GZIP`).
    pub gzip: bool,
}

impl DownloadBillRequest {
    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a date that cannot be written as `yyyyMMdd`.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        let date = Some(crate::time::format_compact_date(self.bill_date))
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| validate::invalid("bill_date must be a four-digit year"))?;
        let mut p = base_params(cfg);
        put(&mut p, "bill_date", &date);
        put(&mut p, "bill_type", self.bill_type.as_str());
        if self.gzip {
            put(&mut p, "tar_type", "GZIP");
        }
        Ok(p)
    }

    /// The unsigned parameters of a service provider's request for one sub-merchant's bill:
    /// [`to_params`](Self::to_params) plus `sub_mch_id`. (Without it, a provider gets its own
    /// bill, which covers all its sub-merchants.)
    ///
    /// # Errors
    /// As [`to_params`](Self::to_params).
    pub fn to_partner_params(
        &self,
        cfg: &V2Config,
        sub_mch_id: &SubMchid,
    ) -> Result<XmlMap, Error> {
        let mut p = self.to_params(cfg)?;
        put(&mut p, "sub_mch_id", sub_mch_id);
        Ok(p)
    }
}
