"""The emulator's demo account: signatures, templates, qualifications and sandbox numbers.

This data is documented in README.md, so it must stay exactly as it is; tests and examples rely on every name,
code and status here. Every person, company, ID number and URL is fictitious.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

#: QuerySmsSignList AuditStatus -> GetSmsSign SignStatus.
SIGN_STATUS_CODES: dict[str, int] = {
    "AUDIT_STATE_INIT": 0,
    "AUDIT_STATE_PASS": 1,
    "AUDIT_STATE_NOT_PASS": 2,
    "AUDIT_STATE_CANCEL": 10,
}

#: QuerySmsTemplateList AuditStatus -> GetSmsTemplate TemplateStatus. Both cancel spellings exist on the wire.
TEMPLATE_STATUS_CODES: dict[str, str] = {
    "AUDIT_STATE_INIT": "0",
    "AUDIT_STATE_PASS": "1",
    "AUDIT_STATE_NOT_PASS": "2",
    "AUDIT_STATE_CANCEL": "10",
    "AUDIT_SATE_CANCEL": "10",
}

#: Outer template type (OuterTemplateType, GetSmsTemplate.TemplateType, statistics filter) -> the list
#: API's own numbering (QuerySmsTemplateList.TemplateType). Alibaba really uses two numberings.
OUTER_TO_LIST_TYPE: dict[int, int] = {0: 2, 1: 0, 2: 1, 3: 6, 7: 7}

#: Outer template types.
VERIFICATION, NOTIFICATION, PROMOTIONAL, INTERNATIONAL, DIGITAL = 0, 1, 2, 3, 7

#: Sign BusinessType values (Chinese on the wire).
GENERAL_SIGN = "通用类型"
VERIFICATION_SIGN = "验证码类型"

#: Sandbox numbers with a fixed receipt: (SendStatus, ErrCode), or None for "the receipt never arrives".
#: Every other accepted number is delivered (SendStatus 3, ErrCode DELIVERED) after the receipt delay.
FIXED_RECEIPTS: dict[str, tuple[int, str] | None] = {
    "13900000001": (2, "MN:0001"),  # the number does not exist
    "13900000002": (2, "MK:100D"),  # the handset is unreachable
    "13900000003": None,  # stays SendStatus 1 (waiting for receipt) forever
}

NO_REMARK = "无审核备注"

# QuerySmsSignList order. audit_date "" = not audited yet.
SIGNS: list[dict[str, Any]] = [
    {
        "name": "速通科技",
        "audit_status": "AUDIT_STATE_PASS",
        "business_type": GENERAL_SIGN,
        "create_date": "2025-03-12 10:21:05",
        "audit_date": "2025-03-12 15:40:11",
        "reject_info": NO_REMARK,
        "order_id": "20250312001",
        "qualification_id": 10001,
        "sign_code": "SIGN_100000180012025_1741746065000_Su7Tk",
        "remark": "公司全称杭州速通科技有限公司的简称，用于登录验证和订单通知。",
        "apply_scene": "https://www.sutong.example.com",
        "sign_usage": "企业名称",
    },
    {
        "name": "速通验证",
        "audit_status": "AUDIT_STATE_PASS",
        "business_type": VERIFICATION_SIGN,
        "create_date": "2025-03-15 09:02:44",
        "audit_date": "2025-03-15 14:18:27",
        "reject_info": NO_REMARK,
        "order_id": "20250315002",
        "qualification_id": 10001,
        "sign_code": "SIGN_100000180012025_1741999364000_Su7Vf",
        "remark": "速通科技App登录与注册验证码专用签名。",
        "apply_scene": "https://www.sutong.example.com/app",
        "sign_usage": "App名称",
    },
    {
        "name": "SuTong",
        "audit_status": "AUDIT_STATE_PASS",
        "business_type": GENERAL_SIGN,
        "create_date": "2025-04-02 16:45:30",
        "audit_date": "2025-04-03 10:05:52",
        "reject_info": NO_REMARK,
        "order_id": "20250402003",
        "qualification_id": 10001,
        "sign_code": "SIGN_100000180012025_1743583530000_SuTgI",
        "remark": "English brand name of 杭州速通科技有限公司, used for international messages.",
        "apply_scene": "https://en.sutong.example.com",
        "sign_usage": "商标名称",
    },
    {
        "name": "星河商城",
        "audit_status": "AUDIT_STATE_INIT",
        "business_type": GENERAL_SIGN,
        "create_date": "2025-06-18 11:30:00",
        "audit_date": "",
        "reject_info": NO_REMARK,
        "order_id": "20250618004",
        "qualification_id": 10002,
        "sign_code": "SIGN_100000180012025_1750217400000_XhSc8",
        "remark": "星河商城（深圳）有限公司线上商城订单通知。",
        "apply_scene": "https://www.xinghe-mall.example.com",
        "sign_usage": "网站名称",
    },
    {
        "name": "月光书店",
        "audit_status": "AUDIT_STATE_NOT_PASS",
        "business_type": GENERAL_SIGN,
        "create_date": "2025-05-20 14:12:09",
        "audit_date": "2025-05-21 10:33:47",
        "reject_info": "文件不能证明信息真实性，请重新上传。",
        "order_id": "20250520005",
        "qualification_id": 10003,
        "sign_code": "SIGN_100000180012025_1747721529000_YgSd2",
        "remark": "月光书店会员活动与到货通知。",
        "apply_scene": "https://www.moonlight-books.example.com",
        "sign_usage": "店铺名称",
    },
    {
        "name": "旧品牌",
        "audit_status": "AUDIT_STATE_CANCEL",
        "business_type": GENERAL_SIGN,
        "create_date": "2025-01-08 08:55:16",
        "audit_date": "2025-01-09 09:00:00",
        "reject_info": NO_REMARK,
        "order_id": "20250108006",
        "qualification_id": 10001,
        "sign_code": "SIGN_100000180012025_1736297716000_JpPz0",
        "remark": "已停用的旧品牌名称。",
        "apply_scene": "https://old.sutong.example.com",
        "sign_usage": "商标名称",
    },
]

TEMPLATES: list[dict[str, Any]] = [
    {
        "code": "SMS_900000001",
        "name": "登录验证码",
        "outer_type": VERIFICATION,
        "content": "您的验证码为${code}，5分钟内有效，请勿泄露于他人。",
        "audit_status": "AUDIT_STATE_PASS",
        "variables": {"code": "numberCaptcha"},
        "related_sign": "速通科技",
        "create_date": "2025-03-12 11:02:37",
        "audit_date": "2025-03-12 16:20:05",
        "reject_info": NO_REMARK,
        "order_id": "20250312101",
        "remark": "用户登录速通科技App时发送的验证码。",
    },
    {
        "code": "SMS_900000002",
        "name": "发货通知",
        "outer_type": NOTIFICATION,
        "content": "尊敬的${name}，您的订单${order_no}已发货，预计${date}送达，请保持电话畅通。",
        "audit_status": "AUDIT_STATE_PASS",
        "variables": {"name": "name", "order_no": "other_number2", "date": "time"},
        "related_sign": "速通科技",
        "create_date": "2025-03-13 09:45:12",
        "audit_date": "2025-03-13 14:02:58",
        "reject_info": NO_REMARK,
        "order_id": "20250313102",
        "remark": "订单发货后通知收货人。",
    },
    {
        "code": "SMS_900000003",
        "name": "会员促销",
        "outer_type": PROMOTIONAL,
        "content": "${name}您好，会员日全场8折，详询门店。拒收请回复R",
        "audit_status": "AUDIT_STATE_PASS",
        "variables": {"name": "name"},
        "related_sign": "速通科技",
        "create_date": "2025-04-10 10:10:10",
        "audit_date": "2025-04-10 17:31:44",
        "reject_info": NO_REMARK,
        "order_id": "20250410103",
        "remark": "会员日促销，仅发送给已同意接收营销短信的会员。",
    },
    {
        "code": "SMS_900000004",
        "name": "International code",
        "outer_type": INTERNATIONAL,
        "content": "Your verification code is ${code}. It expires in 5 minutes.",
        "audit_status": "AUDIT_STATE_PASS",
        "variables": {"code": "numberCaptcha"},
        "related_sign": "SuTong",
        "create_date": "2025-04-03 11:20:00",
        "audit_date": "2025-04-03 15:47:21",
        "reject_info": NO_REMARK,
        "order_id": "20250403104",
        "remark": "Login verification codes for overseas users.",
    },
    {
        "code": "SMS_900000005",
        "name": "预约提醒",
        "outer_type": NOTIFICATION,
        "content": "您预约的${service}将于${time}开始，请准时到达。",
        "audit_status": "AUDIT_STATE_INIT",
        "variables": {"service": "others", "time": "time"},
        "related_sign": "速通科技",
        "create_date": "2025-06-20 15:03:26",
        "audit_date": "",
        "reject_info": NO_REMARK,
        "order_id": "20250620105",
        "remark": "服务预约开始前提醒客户。",
    },
    {
        "code": "SMS_900000006",
        "name": "活动邀请",
        "outer_type": PROMOTIONAL,
        "content": "${name}您好，诚邀您参加${event}。拒收请回复R",
        "audit_status": "AUDIT_STATE_NOT_PASS",
        "variables": {"name": "name", "event": "others"},
        "related_sign": "速通科技",
        "create_date": "2025-05-08 10:00:00",
        "audit_date": "2025-05-08 18:12:40",
        "reject_info": "变量不符合规范",
        "order_id": "20250508106",
        "remark": "线下活动邀请。",
    },
    {
        "code": "SMS_900000007",
        "name": "旧验证码",
        "outer_type": VERIFICATION,
        "content": "您的校验码是${code}。",
        "audit_status": "AUDIT_SATE_CANCEL",  # Alibaba's real typo
        "variables": {"code": "numberCaptcha"},
        "related_sign": "旧品牌",
        "create_date": "2025-01-08 09:12:00",
        "audit_date": "2025-01-09 09:05:00",
        "reject_info": NO_REMARK,
        "order_id": "20250108107",
        "remark": "旧品牌的校验码模板，已撤回。",
    },
    {
        "code": "SMS_900000008",
        "name": "账单提醒",
        "outer_type": NOTIFICATION,
        "content": "您${month}月账单金额${amount}元。",
        "audit_status": "AUDIT_STATE_CANCEL",
        "variables": {"month": "other_number2", "amount": "money"},
        "related_sign": "速通科技",
        "create_date": "2025-02-14 13:30:00",
        "audit_date": "2025-02-15 10:00:00",
        "reject_info": NO_REMARK,
        "order_id": "20250214108",
        "remark": "月度账单提醒。",
    },
    {
        "code": "SMS_900000009",
        "name": "数字短信",
        "outer_type": DIGITAL,
        "content": "${name}，您的电子券已到账。",
        "audit_status": "AUDIT_STATE_INIT",
        "variables": {"name": "name"},
        "related_sign": "速通科技",
        "create_date": "2025-07-01 09:30:00",
        "audit_date": "",
        "reject_info": NO_REMARK,
        "order_id": "20250701109",
        "remark": "电子券到账的数字短信。",
    },
]


def _licence(kind: str, group_id: int) -> dict[str, str]:
    key = f"qualification/{group_id}/{kind}.jpg"
    return {
        "Type": kind,
        "LicensePic": key,
        "PicUrl": f"https://dysms-qualification.oss-cn-hangzhou.example.com/{key}?Expires=1893456000",
    }


def _id_pic(group_id: int, side: str) -> str:
    return f"https://dysms-qualification.oss-cn-hangzhou.example.com/qualification/{group_id}/id-{side}.jpg"


QUALIFICATIONS: list[dict[str, Any]] = [
    {
        "group_id": 10001,
        "name": "速通科技资质",
        "company": "杭州速通科技有限公司",
        "legal_person": "张三",
        "state_name": "PASS",
        "state": "PASSED",
        "use_by_self": True,
        "work_order_id": 20001,
        "audit_remark": "",
        "audit_time": "2025-03-11 16:05:30",
        "create_date": "2025-03-10 09:30:12",
        "detail": {
            "Remark": "本公司自用资质",
            "BusinessType": "dysms",
            "CompanyType": "COMPANY",
            "OrganizationCode": "91330106MA2B0C1D2E",
            "EffTimeStr": "2019-06-01~2039-05-31",
            "LegalPersonIDCardNo": "330106198503150018",
            "LegalPersonIDCardType": "identityCard",
            "LegalPersonIdCardEffTime": "2018-04-01~2038-04-01",
            "AdminName": "赵敏",
            "AdminPhoneNo": "13800138000",
            "AdminIDCardNo": "330102199208120026",
            "AdminIDCardType": "identityCard",
            "AdminIDCardExpDate": "2021-09-01~2041-09-01",
            "AdminIDCardFrontFace": _id_pic(10001, "front"),
            "AdminIDCardPic": _id_pic(10001, "back"),
            "BusinessLicensePics": [_licence("socialCreditLicense", 10001)],
            "OtherFiles": [],
            "WhetherShare": False,
        },
    },
    {
        "group_id": 10002,
        "name": "星河商城资质",
        "company": "星河商城（深圳）有限公司",
        "legal_person": "李四",
        "state_name": "NOT_PASS",
        "state": "FAILED",
        "use_by_self": False,
        "work_order_id": 20002,
        "audit_remark": "营业执照已过期",
        "audit_time": "2025-06-17 11:42:08",
        "create_date": "2025-06-16 14:20:45",
        "detail": {
            "Remark": "为合作方星河商城申请的他用资质",
            "BusinessType": "dysms",
            "CompanyType": "COMPANY",
            "OrganizationCode": "91440300MA5F6G7H8J",
            "EffTimeStr": "2015-03-01~2025-02-28",
            "LegalPersonIDCardNo": "440304198807070031",
            "LegalPersonIDCardType": "identityCard",
            "LegalPersonIdCardEffTime": "2016-07-07~2036-07-07",
            "AdminName": "陈晨",
            "AdminPhoneNo": "13912345678",
            "AdminIDCardNo": "440305199512300042",
            "AdminIDCardType": "identityCard",
            "AdminIDCardExpDate": "2020-12-30~2040-12-30",
            "AdminIDCardFrontFace": _id_pic(10002, "front"),
            "AdminIDCardPic": _id_pic(10002, "back"),
            "BusinessLicensePics": [_licence("businessLicense", 10002)],
            "OtherFiles": [
                {
                    "LicensePic": "qualification/10002/authorization-letter.jpg",
                    "PicUrl": "https://dysms-qualification.oss-cn-hangzhou.example.com/qualification/10002/"
                    "authorization-letter.jpg?Expires=1893456000",
                }
            ],
            "WhetherShare": False,
        },
    },
    {
        "group_id": 10003,
        "name": "月光书店资质",
        "company": "月光书店",
        "legal_person": "王五",
        "state_name": "INIT",
        "state": "INT",
        "use_by_self": True,
        "work_order_id": 20003,
        "audit_remark": "",
        "audit_time": "",
        "create_date": "2025-05-19 10:08:33",
        "detail": {
            "Remark": "个体工商户自用资质",
            "BusinessType": "dysms",
            "CompanyType": "COMPANY",
            "OrganizationCode": "92310115MA1K2L3M4N",
            "EffTimeStr": "2021-01-01~2041-01-01",
            "LegalPersonIDCardNo": "310115197911110057",
            "LegalPersonIDCardType": "identityCard",
            "LegalPersonIdCardEffTime": "2019-11-11~2039-11-11",
            "AdminName": "王五",
            "AdminPhoneNo": "13700137000",
            "AdminIDCardNo": "310115197911110057",
            "AdminIDCardType": "identityCard",
            "AdminIDCardExpDate": "2019-11-11~2039-11-11",
            "AdminIDCardFrontFace": _id_pic(10003, "front"),
            "AdminIDCardPic": _id_pic(10003, "back"),
            "BusinessLicensePics": [_licence("businessLicense", 10003)],
            "OtherFiles": [],
            "WhetherShare": False,
        },
    },
]


def populate(conn: sqlite3.Connection) -> None:
    """Insert the demo account. The caller owns the transaction and has created the schema."""
    for position, sign in enumerate(SIGNS):
        conn.execute(
            "INSERT INTO signs (name, position, audit_status, business_type, create_date, audit_date, "
            "reject_info, order_id, qualification_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sign["name"],
                position,
                sign["audit_status"],
                sign["business_type"],
                sign["create_date"],
                sign["audit_date"],
                sign["reject_info"],
                sign["order_id"],
                sign["qualification_id"],
                json.dumps(
                    {k: sign[k] for k in ("sign_code", "remark", "apply_scene", "sign_usage")},
                    ensure_ascii=False,
                ),
            ),
        )
    for template in TEMPLATES:
        insert_template(conn, template)
    for q in QUALIFICATIONS:
        conn.execute(
            "INSERT INTO qualifications (group_id, name, company, legal_person, state_name, state, "
            "use_by_self, work_order_id, audit_remark, audit_time, create_date, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                q["group_id"],
                q["name"],
                q["company"],
                q["legal_person"],
                q["state_name"],
                q["state"],
                int(q["use_by_self"]),
                q["work_order_id"],
                q["audit_remark"],
                q["audit_time"],
                q["create_date"],
                json.dumps(q["detail"], ensure_ascii=False),
            ),
        )


def insert_template(conn: sqlite3.Connection, template: dict[str, Any]) -> None:
    """Insert one template row (position = after every existing template)."""
    conn.execute(
        "INSERT INTO templates (code, position, name, outer_type, content, audit_status, variables, "
        "related_sign, create_date, audit_date, reject_info, order_id, remark) "
        "VALUES (?, (SELECT COALESCE(MAX(position), -1) + 1 FROM templates), "
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            template["code"],
            template["name"],
            template["outer_type"],
            template["content"],
            template["audit_status"],
            json.dumps(template["variables"], ensure_ascii=False),
            template["related_sign"],
            template["create_date"],
            template["audit_date"],
            template["reject_info"],
            template["order_id"],
            template["remark"],
        ),
    )
