use time::macros::datetime;

use super::*;

fn express_upload() -> UploadShippingInfo {
    UploadShippingInfo {
        order_key: OrderKey::out_trade_no("1230000109", "SO20240610001"),
        shipment: Shipment::unified(
            LogisticsType::Express,
            ShippingItem::express("SF", "SF1234567890", "T恤 x2").receiver_contact("189****1234"),
        ),
        upload_time: datetime!(2022-12-15 13:29:35 +08:00),
        payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
    }
}

#[test]
fn upload_serializes_as_documented() {
    let request = express_upload();
    request.validate().unwrap();
    assert_eq!(
        request.to_json(),
        json!({
            "order_key": {"order_number_type": 1, "mchid": "1230000109", "out_trade_no": "SO20240610001"},
            "logistics_type": 1,
            "delivery_mode": 1,
            "shipping_list": [{
                "tracking_no": "SF1234567890",
                "express_company": "SF",
                "item_desc": "T恤 x2",
                "contact": {"receiver_contact": "189****1234"},
            }],
            "upload_time": "2022-12-15T13:29:35+08:00",
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        })
    );
    let virtual_goods = UploadShippingInfo {
        order_key: OrderKey::transaction_id("4200002222202406100123456789"),
        shipment: Shipment::unified(LogisticsType::Virtual, ShippingItem::described("会员卡")),
        ..express_upload()
    };
    virtual_goods.validate().unwrap();
    let json = virtual_goods.to_json();
    assert_eq!(
        json["order_key"],
        json!({"order_number_type": 2, "transaction_id": "4200002222202406100123456789"})
    );
    assert_eq!(json["logistics_type"], 3);
    assert_eq!(json["shipping_list"], json!([{"item_desc": "会员卡"}]));
    assert!(json.get("is_all_delivered").is_none());
}

#[test]
fn split_delivery_sends_is_all_delivered() {
    let request = UploadShippingInfo {
        shipment: Shipment::split(
            vec![
                ShippingItem::express("ZTO", "ZTO1", "上衣"),
                ShippingItem::express("YTO", "YTO2", "裤子"),
            ],
            true,
        ),
        ..express_upload()
    };
    request.validate().unwrap();
    let json = request.to_json();
    assert_eq!(json["delivery_mode"], 2);
    assert_eq!(json["is_all_delivered"], true);
    assert_eq!(json["shipping_list"].as_array().unwrap().len(), 2);
}

fn refused(request: &UploadShippingInfo, needle: &str) {
    let err = request.validate().unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

#[test]
fn field_rules_are_checked_before_sending() {
    let base = express_upload();
    let with_item = |item: ShippingItem| UploadShippingInfo {
        shipment: Shipment::unified(LogisticsType::Express, item),
        ..base.clone()
    };
    // Express needs a tracking number and a company.
    refused(
        &with_item(ShippingItem::described("x")),
        "tracking_no is required",
    );
    let mut no_company = ShippingItem::express("ZTO", "1", "x");
    no_company.express_company = None;
    refused(&with_item(no_company), "express_company is required");
    // SF needs a masked contact.
    refused(
        &with_item(ShippingItem::express("SF", "SF1", "x")),
        "SF Express",
    );
    refused(
        &with_item(ShippingItem::express("SF", "SF1", "x").receiver_contact("18912341234")),
        "masked",
    );
    refused(
        &with_item(ShippingItem::express("SF", "SF1", "x").receiver_contact("189****12")),
        "masked",
    );
    with_item(ShippingItem::express("SF", "SF1", "x").consignor_contact("021-****1234"))
        .validate()
        .unwrap();
    // item_desc: 1..=120 characters (not bytes).
    refused(
        &with_item(ShippingItem::express("ZTO", "1", "")),
        "item_desc must not be empty",
    );
    with_item(ShippingItem::express("ZTO", "1", "货".repeat(120)))
        .validate()
        .unwrap();
    refused(
        &with_item(ShippingItem::express("ZTO", "1", "货".repeat(121))),
        "121 characters",
    );
    // tracking_no / express_company: at most 128 bytes.
    refused(
        &with_item(ShippingItem::express("ZTO", "1".repeat(129), "x")),
        "tracking_no",
    );
    // Unified: exactly one package; split: express only, with is_all_delivered, at most 15.
    let mut two = base.clone();
    two.shipment
        .shipping_list
        .push(ShippingItem::express("ZTO", "2", "x"));
    refused(&two, "exactly 1 package");
    let mut split_virtual = Shipment::split(vec![ShippingItem::described("x")], true);
    split_virtual.logistics_type = LogisticsType::Virtual;
    refused(
        &UploadShippingInfo {
            shipment: split_virtual,
            ..base.clone()
        },
        "only allowed with express",
    );
    let mut no_flag = Shipment::split(vec![ShippingItem::express("ZTO", "1", "x")], true);
    no_flag.is_all_delivered = None;
    refused(
        &UploadShippingInfo {
            shipment: no_flag,
            ..base.clone()
        },
        "is_all_delivered is required",
    );
    let sixteen = (0..16)
        .map(|i| ShippingItem::express("ZTO", i.to_string(), "x"))
        .collect();
    refused(
        &UploadShippingInfo {
            shipment: Shipment::split(sixteen, true),
            ..base.clone()
        },
        "1 to 15",
    );
    let fifteen = (0..15)
        .map(|i| ShippingItem::express("ZTO", i.to_string(), "x"))
        .collect();
    UploadShippingInfo {
        shipment: Shipment::split(fifteen, false),
        ..base.clone()
    }
    .validate()
    .unwrap();
    refused(
        &UploadShippingInfo {
            shipment: Shipment::split(vec![], true),
            ..base.clone()
        },
        "1 to 15",
    );
    // Keys and payer.
    refused(
        &UploadShippingInfo {
            order_key: OrderKey::out_trade_no("12a", "SO1"),
            ..base.clone()
        },
        "mchid",
    );
    refused(
        &UploadShippingInfo {
            order_key: OrderKey::out_trade_no("123", "SO 1"),
            ..base.clone()
        },
        "out_trade_no",
    );
    refused(
        &UploadShippingInfo {
            order_key: OrderKey::transaction_id(""),
            ..base.clone()
        },
        "transaction_id",
    );
    refused(
        &UploadShippingInfo {
            payer_openid: String::new(),
            ..base
        },
        "payer.openid",
    );
}

#[test]
fn combined_upload_checks_its_sub_orders() {
    let base = express_upload();
    let combined = UploadCombinedShippingInfo {
        order_key: OrderKey::out_trade_no("1230000109", "COMBINED1"),
        sub_orders: vec![
            SubOrderShipment {
                order_key: OrderKey::out_trade_no("1230000109", "SUB1"),
                shipment: base.shipment.clone(),
            },
            SubOrderShipment {
                order_key: OrderKey::out_trade_no("1230000110", "SUB2"),
                shipment: Shipment::unified(
                    LogisticsType::SelfPickup,
                    ShippingItem::described("自提"),
                ),
            },
        ],
        upload_time: base.upload_time,
        payer_openid: base.payer_openid.clone(),
    };
    combined.validate().unwrap();
    let json = combined.to_json();
    assert_eq!(json["sub_orders"][1]["logistics_type"], 4);
    assert_eq!(json["sub_orders"][1]["order_key"]["out_trade_no"], "SUB2");
    assert_eq!(json["payer"]["openid"], base.payer_openid);
    let mut mixed = combined.clone();
    mixed.sub_orders[0].order_key = OrderKey::transaction_id("4200000001");
    assert!(
        mixed
            .validate()
            .unwrap_err()
            .to_string()
            .contains("same order_number_type")
    );
    let mut empty = combined.clone();
    empty.sub_orders.clear();
    assert!(empty.validate().is_err());
    let mut bad_sub = combined;
    bad_sub.sub_orders[1].shipment.shipping_list[0].item_desc = String::new();
    assert!(
        bad_sub
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sub_orders[1].shipping_list[0].item_desc")
    );
}

#[test]
fn order_refs_use_the_query_names() {
    let mut body = Map::new();
    OrderRef::MerchantTradeNo {
        merchant_id: "1230000109".into(),
        sub_merchant_id: Some("1900000109".into()),
        merchant_trade_no: "SO1".into(),
    }
    .write(&mut body);
    assert_eq!(
        Value::Object(body),
        json!({"merchant_id": "1230000109", "sub_merchant_id": "1900000109", "merchant_trade_no": "SO1"})
    );
    assert!(OrderRef::TransactionId("42 00".into()).validate().is_err());
}

#[test]
fn get_order_answer_decodes_with_unknown_fields_and_states() {
    let answer = json!({
        "transaction_id": "42000020212023112332159214xx",
        "merchant_id": "1230000109",
        "sub_merchant_id": "",
        "merchant_trade_no": "SO1",
        "description": "T恤",
        "paid_amount": 1990,
        "openid": "oUpF8",
        "trade_create_time": 0,
        "pay_time": 1700000000,
        "order_state": 6,
        "in_complaint": false,
        "upload_scene": 2,
        "shipping": {
            "delivery_mode": 2,
            "logistics_type": 1,
            "finish_shipping": true,
            "goods_desc": "",
            "finish_shipping_count": 2,
            "shipping_list": [{"tracking_no": "ZTO1", "express_company": "ZTO", "goods_desc": "上衣", "upload_time": 1700000100, "contact": {"receiver_contact": "189****1234"}}]
        }
    });
    let order: TradeOrder = serde_json::from_value(answer).unwrap();
    assert_eq!(order.order_state, OrderState::AwaitingSettlement);
    assert_eq!(order.paid_amount, 1990);
    assert_eq!(order.shipping.finish_shipping_count, 2);
    assert_eq!(order.shipping.shipping_list[0].upload_time, 1_700_000_100);
    let pending: TradeOrder =
        serde_json::from_value(json!({"transaction_id": "1", "order_state": 9})).unwrap();
    assert_eq!(pending.order_state, OrderState::Other(9));
    assert_eq!(pending.order_state.code(), 9);
    assert_eq!(pending.shipping, OrderShipping::default());
}

#[test]
fn order_list_query_rules() {
    let query = OrderListQuery {
        pay_time_range: Some((0, 1_700_000_000)),
        order_state: Some(OrderState::Shipped),
        page_size: Some(50),
        ..OrderListQuery::default()
    };
    query.validate().unwrap();
    assert_eq!(
        query.to_json(),
        json!({"pay_time_range": {"begin_time": 0, "end_time": 1_700_000_000}, "order_state": 2, "page_size": 50})
    );
    assert_eq!(OrderListQuery::default().to_json(), json!({}));
    for bad in [
        OrderListQuery {
            page_size: Some(0),
            ..OrderListQuery::default()
        },
        OrderListQuery {
            page_size: Some(101),
            ..OrderListQuery::default()
        },
        OrderListQuery {
            pay_time_range: Some((10, 5)),
            ..OrderListQuery::default()
        },
        OrderListQuery {
            last_index: Some(String::new()),
            ..OrderListQuery::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn jump_path_rules() {
    validate_jump_path("pages/order/detail").unwrap();
    for bad in ["", "/pages/a", "pages/a?x=1"] {
        assert!(validate_jump_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn shipping_errcodes_are_typed() {
    use crate::mp::ErrCode;
    for code in [
        10_060_001,
        10_060_002,
        10_060_003,
        10_060_004,
        10_060_005,
        10_060_006,
        10_060_007,
        10_060_008,
        10_060_009,
        10_060_011,
        10_060_012,
        10_060_014,
        10_060_019,
        10_060_020,
        10_060_023,
        10_060_024,
        10_060_025,
        10_060_026,
        10_060_028,
        10_060_029,
        10_060_030,
        10_060_031,
        10_060_032,
        268_485_194,
        268_485_195,
        268_485_196,
        268_485_197,
        268_485_216,
        268_485_224,
        268_485_226,
        268_485_227,
        268_485_228,
        268_546_000,
        268_546_001,
        268_546_002,
    ] {
        let typed = ErrCode::from_code(code);
        assert!(!matches!(typed, ErrCode::Other(_)), "{code} is not typed");
        assert_eq!(typed.code(), code);
    }
    assert_eq!(ErrCode::from_code(10_060_001), ErrCode::PaymentNotFound);
    assert_eq!(ErrCode::from_code(10_060_003), ErrCode::ReshipUsed);
    assert!(ErrCode::from_code(10_060_012).is_busy());
    assert!(ErrCode::from_code(-1).is_busy());
    assert_eq!(ErrCode::from_code(10_060_099), ErrCode::Other(10_060_099));
}
