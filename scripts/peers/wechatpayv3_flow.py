"""wechatpayv3 (PyPI, minibear2021/wechatpayv3) against `wxpay sim`, unpatched: the SDK signs every
request and verifies every answer and notification with its own code.

Usage: SIM="<url> <state dir>" python wechatpayv3_flow.py public_key|certificate
"""

import gzip
import hashlib
import json
import sys
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import WeChatPay, WeChatPayType

from peer import Receiver, check, main, sim_from_env, step


def run():
    mode = sys.argv[1]
    sim = sim_from_env("SIM")
    sim.route_real_hosts_here()
    m = sim.merchant
    receiver = Receiver()
    cert_dir = tempfile.mkdtemp(prefix="wechatpayv3-certs-")
    common = dict(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=m["mchid"],
        private_key=sim.read("apiclient_key"),
        cert_serial_no=m["merchant_serial"],
        appid=m["appid"],
        apiv3_key=m["api_v3_key"],
        notify_url=receiver.url + "/notify/refund",
        timeout=(10, 30),
    )
    if mode == "public_key":
        wxpay = WeChatPay(
            public_key=sim.read("wechatpay_public_key"),
            public_key_id=m["wechatpay_public_key_id"],
            **common,
        )
    else:
        # No keys given: the SDK downloads /v3/certificates, decrypts them itself, and keeps
        # them in cert_dir.
        wxpay = WeChatPay(cert_dir=cert_dir, **common)
        check(len(wxpay._core._certificates) == 1, "the platform certificate was not loaded")
    step(f"wechatpayv3 {mode}: client ready")

    openid = sim.new_user()
    no = "PY3-%s-%d" % (mode[:4], time.time_ns() % 10**12)
    code, message = wxpay.pay(
        description="Coffee",
        out_trade_no=no,
        amount={"total": 1250, "currency": "CNY"},
        payer={"openid": openid},
        notify_url=receiver.url + "/notify/pay",
    )
    check(code == 200, f"prepay: {code} {message}")
    prepay_id = json.loads(message)["prepay_id"]
    step("mini-program prepay (answer verified by the SDK)")

    timestamp, nonce = str(int(time.time())), "n%d" % time.time_ns()
    package = "prepay_id=" + prepay_id
    pay_sign = wxpay.sign([m["appid"], timestamp, nonce, package])
    status, paid = sim.control(
        "POST",
        "/sim/pay",
        {"appId": m["appid"], "timeStamp": timestamp, "nonceStr": nonce, "package": package,
         "signType": "RSA", "paySign": pay_sign, "openid": openid},
    )
    check(status == 200, f"/sim/pay refused the SDK's paySign: {status} {paid}")
    step("the SDK's paySign accepted by /sim/pay")

    headers, body = receiver.wait("/notify/pay")
    note = wxpay.callback(headers, body)
    check(note is not None, "the SDK did not accept the payment notification")
    check(note["event_type"] == "TRANSACTION.SUCCESS", note)
    resource = note["resource"]
    check(resource["out_trade_no"] == no and resource["trade_state"] == "SUCCESS", resource)
    check(resource["amount"]["total"] == 1250, resource)
    transaction_id = resource["transaction_id"]
    step("payment notification verified and decrypted by the SDK")

    code, message = wxpay.query(out_trade_no=no)
    check(code == 200 and json.loads(message)["trade_state"] == "SUCCESS", f"{code} {message}")
    code, message = wxpay.query(transaction_id=transaction_id)
    check(code == 200 and json.loads(message)["out_trade_no"] == no, f"{code} {message}")
    step("query by out_trade_no and by transaction_id")

    other = no + "-C"
    code, message = wxpay.pay(
        description="Tea", out_trade_no=other, amount={"total": 300},
        payer={"openid": openid}, notify_url=receiver.url + "/notify/pay",
    )
    check(code == 200, f"{code} {message}")
    code, message = wxpay.close(out_trade_no=other)
    check(code == 204, f"close: {code} {message}")
    code, message = wxpay.query(out_trade_no=other)
    check(json.loads(message)["trade_state"] == "CLOSED", message)
    step("close (204, signed empty body verified)")

    out_refund_no = no + "-R1"
    code, message = wxpay.refund(
        out_refund_no=out_refund_no,
        amount={"refund": 250, "total": 1250, "currency": "CNY"},
        transaction_id=transaction_id,
        reason="test",
    )
    check(code == 200, f"refund: {code} {message}")
    check(json.loads(message)["status"] in ("PROCESSING", "SUCCESS"), message)
    code, message = wxpay.query_refund(out_refund_no=out_refund_no)
    check(code == 200 and json.loads(message)["out_refund_no"] == out_refund_no, message)
    step("refund and refund query")

    headers, body = receiver.wait("/notify/refund")
    note = wxpay.callback(headers, body)
    check(note is not None, "the SDK did not accept the refund notification")
    check(note["event_type"] == "REFUND.SUCCESS", note)
    check(note["resource"]["out_refund_no"] == out_refund_no, note)
    check(note["resource"]["refund_status"] == "SUCCESS", note)
    step("refund notification verified and decrypted by the SDK")

    # Today's bills exist from 10:00 tomorrow, Beijing time: two days on is always past it.
    status, clock = sim.control("GET", "/sim/clock")
    today = clock["now"][:10]
    status, _ = sim.control("POST", "/sim/clock/advance", {"seconds": 172800})
    check(status == 200, "advancing the clock")
    for name, (code, message) in (
        ("trade", wxpay.trade_bill(bill_date=today)),
        ("fund-flow", wxpay.fundflow_bill(bill_date=today)),
    ):
        check(code == 200, f"{name} bill: {code} {message}")
        offer = json.loads(message)
        code, content = wxpay.download_bill(offer["download_url"])
        check(code == 200, f"{name} bill download: {code}")
        text = gzip.decompress(content)
        check(hashlib.sha1(text).hexdigest() == offer["hash_value"], f"{name} bill hash")
        check(text.startswith(b"\xef\xbb\xbf"), f"{name} bill without its BOM")
        if name == "trade":
            check(no.encode() in text, "the payment is not in the trade bill")
    step("trade and fund-flow bills: applied, downloaded (gzip), SHA-1 checked")

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    keys = (
        dict(public_key=sim.read("wechatpay_public_key"), public_key_id=m["wechatpay_public_key_id"])
        if mode == "public_key"
        # The certificate the first client downloaded and saved in cert_dir.
        else dict(cert_dir=cert_dir)
    )
    wrong = WeChatPay(**{**common, "private_key": pem}, **keys)
    code, message = wrong.query(out_trade_no=no)
    check(code == 401 and json.loads(message)["code"] == "SIGN_ERROR", f"{code} {message}")
    step("a wrongly signed request is refused with 401 SIGN_ERROR")
    receiver.close()


if __name__ == "__main__":
    main(run)
