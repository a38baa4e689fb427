"""wechatpy (PyPI, API v2) against `wxpay sim`, unpatched: orders, the JSAPI payment parameters,
notifications and a refund over mutual TLS, each answer's sign checked with the SDK's own code.

Usage: SIM="<url> <state dir>" python wechatpy_flow.py
"""

import time

from wechatpy.pay import WeChatPay

from peer import Receiver, check, main, sim_from_env, step


def run():
    sim = sim_from_env("SIM")
    sim.route_real_hosts_here()
    m = sim.merchant
    receiver = Receiver(xml_ack=True)
    pay = WeChatPay(
        appid=m["appid"],
        api_key=m["api_v2_key"],
        mch_id=m["mchid"],
        # The merchant API certificate and key, for /secapi/ (mutual TLS).
        mch_cert=sim.path("apiclient_cert"),
        mch_key=sim.path("apiclient_key"),
        timeout=30,
    )

    def signed(answer, what):
        # wechatpy raises on return_code/result_code FAIL; the sign is checked here with its own
        # check_signature, as its docs ask of callers.
        check(pay.check_signature(dict(answer)), f"{what}: the answer's sign does not verify")
        return answer

    openid = sim.new_user()
    no = "PY2-%d" % (time.time_ns() % 10**12)
    order = signed(
        pay.order.create(
            trade_type="JSAPI", body="Coffee", total_fee=1250,
            notify_url=receiver.url + "/notify/pay", client_ip="127.0.0.1",
            user_id=openid, out_trade_no=no,
        ),
        "unifiedorder",
    )
    prepay_id = order["prepay_id"]
    step("v2 order create (unifiedorder)")

    params = pay.jsapi.get_jsapi_params(prepay_id)
    status, paid = sim.control("POST", "/sim/pay", {**params, "openid": openid})
    check(status == 200, f"/sim/pay refused wechatpy's JSAPI parameters: {status} {paid}")
    step("the SDK's JSAPI payment parameters (MD5 paySign) accepted by /sim/pay")

    _, body = receiver.wait("/notify/pay")
    note = pay.parse_payment_result(body)
    check(note["out_trade_no"] == no and note["result_code"] == "SUCCESS", note)
    check(note["total_fee"] == 1250, note)
    transaction_id = note["transaction_id"]
    step("payment notification parsed and its sign verified by the SDK")

    q = signed(pay.order.query(out_trade_no=no), "orderquery")
    check(q["trade_state"] == "SUCCESS" and q["transaction_id"] == transaction_id, q)
    step("order query")

    other = no + "C"
    signed(
        pay.order.create(
            trade_type="JSAPI", body="Tea", total_fee=300,
            notify_url=receiver.url + "/notify/pay", client_ip="127.0.0.1",
            user_id=openid, out_trade_no=other,
        ),
        "unifiedorder",
    )
    signed(pay.order.close(other), "closeorder")
    check(pay.order.query(out_trade_no=other)["trade_state"] == "CLOSED", "not closed")
    step("order close")

    out_refund_no = no + "R1"
    refund = signed(
        pay.refund.apply(
            total_fee=1250, refund_fee=250, out_refund_no=out_refund_no,
            transaction_id=transaction_id, notify_url=receiver.url + "/notify/refund",
        ),
        "refund",
    )
    check(refund["out_refund_no"] == out_refund_no, refund)
    step("refund over mutual TLS (apiclient_cert.pem + apiclient_key.pem)")

    rq = signed(pay.refund.query(out_refund_no=out_refund_no), "refundquery")
    check(rq["out_refund_no_0"] == out_refund_no, rq)
    step("refund query")

    _, body = receiver.wait("/notify/refund")
    refund_note = pay.parse_refund_notify_result(body)
    check(refund_note["out_refund_no"] == out_refund_no, refund_note)
    check(refund_note["refund_status"] == "SUCCESS", refund_note)
    check(refund_note["refund_fee"] == 250, refund_note)
    step("refund notification: req_info decrypted by the SDK")
    receiver.close()


if __name__ == "__main__":
    main(run)
