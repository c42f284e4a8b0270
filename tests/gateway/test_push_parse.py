"""push_parse: XML and JSON, one item or many, and the hostile documents."""

from __future__ import annotations

import orjson
import pytest

from tests.gateway.wechat_sim import xml_doc
from wxsub.errors import PushRejected
from wxsub.wechat.push_parse import (
    ChangeItem,
    PopupItem,
    PushMessage,
    SentItem,
    parse_document,
    read_message,
)

HEAD = {
    "ToUserName": "gh_df0deeb82b8a",
    "FromUserName": "osKp_4j-PO0TsnJhZ1h0GV3alV5U",
    "CreateTime": 1676138120,
    "MsgType": "event",
}

POPUP_XML = b"""<xml><ToUserName><![CDATA[gh_df0deeb82b8a]]></ToUserName>
<FromUserName><![CDATA[osKp_4j-PO0TsnJhZ1h0GV3alV5U]]></FromUserName>
<CreateTime>1676138120</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[subscribe_msg_popup_event]]></Event>
<SubscribeMsgPopupEvent>
<List>
<TemplateId><![CDATA[uzFjHOOsXXgrXl0YHhyNV7jkOKy3Eotj3MhvnTkGA9o]]></TemplateId>
<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>
<PopupScene>0</PopupScene>
</List>
<List>
<TemplateId><![CDATA[IHfdMu-oSryLsdvEQqEjB-tKMW8h6g0h2Joj0wTPNdY]]></TemplateId>
<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>
<PopupScene>0</PopupScene>
</List>
</SubscribeMsgPopupEvent></xml>"""


def parse(body: bytes) -> PushMessage:
    return read_message(parse_document(body))


def test_popup_xml_many_items() -> None:
    msg = parse(POPUP_XML)
    assert msg.is_subscription and msg.create_time == 1676138120
    assert msg.from_user == "osKp_4j-PO0TsnJhZ1h0GV3alV5U"
    assert msg.items == (
        PopupItem("uzFjHOOsXXgrXl0YHhyNV7jkOKy3Eotj3MhvnTkGA9o", "reject", "0"),
        PopupItem("IHfdMu-oSryLsdvEQqEjB-tKMW8h6g0h2Joj0wTPNdY", "accept", "0"),
    )


def test_sent_xml_one_item_keeps_big_msgid_exact() -> None:
    body = xml_doc(
        {
            **HEAD,
            "Event": "subscribe_msg_sent_event",
            "SubscribeMsgSentEvent": [
                {
                    "TemplateId": "T1",
                    "MsgID": 2794188253209100289,
                    "ErrorCode": 0,
                    "ErrorStatus": "success",
                }
            ],
        }
    )
    assert parse(body).items == (SentItem("T1", "2794188253209100289", 0, "success"),)


def test_change_json_list_as_object_and_as_array() -> None:
    one = {
        **HEAD,
        "Event": "subscribe_msg_change_event",
        "List": {"TemplateId": "T1", "SubscribeStatusString": "reject"},
    }
    assert parse(orjson.dumps(one)).items == (ChangeItem("T1", "reject"),)
    many = {**one, "List": [{"TemplateId": "T1", "SubscribeStatusString": "reject"}] * 2}
    assert len(parse(orjson.dumps(many)).items) == 2


def test_json_variants_wrapper_and_string_numbers() -> None:
    doc = {
        **HEAD,
        "CreateTime": "1620973045",
        "Event": "subscribe_msg_sent_event",
        "SubscribeMsgSentEvent": {
            "List": {"TemplateId": "T", "MsgID": "3395159288267931652", "ErrorCode": "43101"}
        },
    }
    msg = parse(orjson.dumps(doc))
    assert msg.create_time == 1620973045
    assert msg.items == (SentItem("T", "3395159288267931652", 43101, ""),)
    doc["SubscribeMsgSentEvent"] = [
        {"TemplateId": "T", "MsgID": 3395159288267931652, "ErrorCode": -1}
    ]
    assert parse(orjson.dumps(doc)).items[0].error_code == -1  # type: ignore[union-attr]


def test_other_events_parse_without_items() -> None:
    msg = parse(xml_doc({**HEAD, "Event": "user_enter_tempsession", "SessionFrom": "x"}))
    assert not msg.is_subscription and msg.items == ()
    text = parse(xml_doc({**HEAD, "MsgType": "text", "Content": "hi"}))
    assert not text.is_subscription


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed"),
        (b"hello", "malformed"),
        (b"<xml><ToUserName>x</xml>", "malformed"),
        (b"{not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (b"<xml>text only</xml>", "malformed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<xml><FromUserName>&lol2;</FromUserName></xml>",
            "forbidden_xml",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b"<xml><FromUserName>&xxe;</FromUserName></xml>",
            "forbidden_xml",
        ),
        (b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:1/x.dtd"><xml><A>1</A></xml>', "forbidden_xml"),
        (b"<xml>" + b"<a>" * 10 + b"x" + b"</a>" * 10 + b"</xml>", "malformed"),
    ],
    ids=[
        "empty",
        "text",
        "unclosed",
        "bad-json",
        "json-array",
        "no-fields",
        "billion-laughs",
        "xxe",
        "external-dtd",
        "deep",
    ],
)
def test_hostile_documents(body: bytes, reason: str) -> None:
    with pytest.raises(PushRejected) as info:
        parse_document(body)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "change",
    [
        {"FromUserName": None},
        {"CreateTime": "soon"},
        {"CreateTime": -5},
        {"List": []},
        {"List": "x"},
        {"List": [{"SubscribeStatusString": "accept"}]},
        {"List": [{"TemplateId": "T"}]},
        {"FromUserName": "o" * 1000},
    ],
)
def test_bad_fields_rejected(change: dict[str, object]) -> None:
    doc = {
        **HEAD,
        "Event": "subscribe_msg_popup_event",
        "List": [{"TemplateId": "T", "SubscribeStatusString": "accept"}],
    }
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(PushRejected) as info:
        parse(orjson.dumps(doc))
    assert info.value.reason == "malformed"
