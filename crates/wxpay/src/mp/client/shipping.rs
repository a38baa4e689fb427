//! Trade management (`/wxa/sec/order/*`) and the express company list.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{MpClient, decode_answer, post_json};
use crate::error::Result;
use crate::http::Idempotency;
use crate::mp::shipping::{
    DeliveryCompany, OrderListPage, OrderListQuery, OrderRef, SpecialOrder, TradeOrder,
    UploadCombinedShippingInfo, UploadShippingInfo, validate_jump_path,
};
use crate::validate::invalid;

#[derive(Deserialize)]
struct Ok {}

impl MpClient {
    /// One authenticated JSON call: the body is sent with the access token, retried once with
    /// a new token when WeChat says the token is invalid or expired.
    async fn call_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        idempotency: Idempotency,
    ) -> Result<T> {
        let body = Bytes::from(body.to_string());
        self.with_token(|token| {
            let body = body.clone();
            async move {
                let url = self.url(path, &[("access_token", token.expose_secret())])?;
                let response = self
                    .inner
                    .http
                    .send(idempotency, || post_json(&url, body.clone()))
                    .await?;
                decode_answer(&response)
            }
        })
        .await
    }

    /// Uploads the shipping information of a payment (`upload_shipping_info`). Checked first
    /// (nothing is sent for an invalid request). Not retried on a lost answer: a second upload
    /// counts as the payment's one re-shipping, so check [`MpClient::get_order`] first.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`]; [`crate::ApiError::MiniProgram`] with e.g.
    /// [`crate::mp::ErrCode::PaymentNotFound`], [`crate::mp::ErrCode::ReshipUsed`]; token,
    /// transport errors.
    pub async fn upload_shipping_info(&self, request: &UploadShippingInfo) -> Result<()> {
        request.validate()?;
        let _: Ok = self
            .call_json(
                "/wxa/sec/order/upload_shipping_info",
                &request.to_json(),
                Idempotency::Once,
            )
            .await?;
        Ok(())
    }

    /// Uploads the shipping information of a combined payment (`upload_combined_shipping_info`).
    ///
    /// # Errors
    /// As [`MpClient::upload_shipping_info`].
    pub async fn upload_combined_shipping_info(
        &self,
        request: &UploadCombinedShippingInfo,
    ) -> Result<()> {
        request.validate()?;
        let _: Ok = self
            .call_json(
                "/wxa/sec/order/upload_combined_shipping_info",
                &request.to_json(),
                Idempotency::Once,
            )
            .await?;
        Ok(())
    }

    /// The trade-management state of a payment (`get_order`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`]; [`crate::mp::ErrCode::PaymentNotFound`]; token,
    /// transport, decode errors.
    pub async fn get_order(&self, order: &OrderRef) -> Result<TradeOrder> {
        order.validate()?;
        let mut body = Map::new();
        order.write(&mut body);
        #[derive(Deserialize)]
        struct Answer {
            order: TradeOrder,
        }
        let answer: Answer = self
            .call_json(
                "/wxa/sec/order/get_order",
                &Value::Object(body),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(answer.order)
    }

    /// One page of the managed payments (`get_order_list`; not for third-party platforms).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`]; [`crate::mp::ErrCode::InvalidLastIndex`]; token,
    /// transport, decode errors.
    pub async fn get_order_list(&self, query: &OrderListQuery) -> Result<OrderListPage> {
        query.validate()?;
        self.call_json(
            "/wxa/sec/order/get_order_list",
            &query.to_json(),
            Idempotency::Idempotent,
        )
        .await
    }

    /// Reminds the buyer to confirm receipt (`notify_confirm_receive`): once per payment,
    /// express only, `received_time` (Unix **seconds**) after the shipping time.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`] (e.g. a time in milliseconds);
    /// [`crate::mp::ErrCode::ConfirmReminderUsed`] and the other codes; token, transport errors.
    pub async fn notify_confirm_receive(&self, order: &OrderRef, received_time: i64) -> Result<()> {
        order.validate()?;
        if !(1..=i64::from(u32::MAX)).contains(&received_time) {
            return Err(invalid(
                "received_time must be Unix seconds (not milliseconds)",
            ));
        }
        let mut body = Map::new();
        order.write(&mut body);
        body.insert("received_time".into(), received_time.into());
        let _: Ok = self
            .call_json(
                "/wxa/sec/order/notify_confirm_receive",
                &Value::Object(body),
                Idempotency::Once,
            )
            .await?;
        Ok(())
    }

    /// Sets the page the buyer's order messages open (`set_msg_jump_path`); WeChat appends the
    /// order's ids as its query. Not for third-party platforms.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`]; token, transport errors.
    pub async fn set_msg_jump_path(&self, path: &str) -> Result<()> {
        validate_jump_path(path)?;
        let _: Ok = self
            .call_json(
                "/wxa/sec/order/set_msg_jump_path",
                &json!({"path": path}),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(())
    }

    /// Whether this mini program is under trade management (`is_trade_managed`).
    ///
    /// # Errors
    /// Token, transport, decode errors; [`crate::mp::ErrCode::FrequencyLimited`].
    pub async fn is_trade_managed(&self) -> Result<bool> {
        #[derive(Deserialize)]
        struct Answer {
            is_trade_managed: bool,
        }
        let answer: Answer = self
            .call_json(
                "/wxa/sec/order/is_trade_managed",
                &json!({"appid": self.appid()}),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(answer.is_trade_managed)
    }

    /// Whether every merchant number linked to this mini program accepted the settlement terms
    /// (`is_trade_management_confirmation_completed`); until then payments can be refused.
    ///
    /// # Errors
    /// As [`MpClient::is_trade_managed`].
    pub async fn is_trade_management_confirmation_completed(&self) -> Result<bool> {
        #[derive(Deserialize)]
        struct Answer {
            completed: bool,
        }
        let answer: Answer = self
            .call_json(
                "/wxa/sec/order/is_trade_management_confirmation_completed",
                &json!({"appid": self.appid()}),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(answer.completed)
    }

    /// Reports a special order (`opspecialorder`): a pre-sale shipping later than usual, or a
    /// test payment that will not ship. Only for payments awaiting shipment. `order_id` is the
    /// `transaction_id` or the `out_trade_no`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`]; [`crate::mp::ErrCode::InvalidDelayTo`],
    /// [`crate::mp::ErrCode::SpecialOrderNotFound`]; token, transport errors.
    pub async fn op_special_order(&self, order_id: &str, kind: SpecialOrder) -> Result<()> {
        if order_id.is_empty()
            || order_id.len() > 32
            || !order_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*'))
        {
            return Err(invalid(
                "order_id must be a transaction_id or out_trade_no (1 to 32 of [0-9A-Za-z_-*])",
            ));
        }
        let body = match kind {
            SpecialOrder::PreSale { delay_to } => {
                if !(1..=i64::from(u32::MAX)).contains(&delay_to) {
                    return Err(invalid("delay_to must be Unix seconds"));
                }
                json!({"order_id": order_id, "type": 1, "delay_to": delay_to})
            }
            SpecialOrder::Test => json!({"order_id": order_id, "type": 2}),
        };
        let _: Ok = self
            .call_json(
                "/wxa/sec/order/opspecialorder",
                &body,
                Idempotency::Idempotent,
            )
            .await?;
        Ok(())
    }

    /// The express companies and their `delivery_id` to upload as `express_company`
    /// (`/cgi-bin/express/delivery/open_msg/get_delivery_list`).
    ///
    /// # Errors
    /// Token, transport, decode errors.
    pub async fn get_delivery_list(&self) -> Result<Vec<DeliveryCompany>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            delivery_list: Vec<DeliveryCompany>,
        }
        let answer: Answer = self
            .call_json(
                "/cgi-bin/express/delivery/open_msg/get_delivery_list",
                &json!({}),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(answer.delivery_list)
    }
}
