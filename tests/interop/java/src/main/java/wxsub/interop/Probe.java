package wxsub.interop;

import cn.binarywang.wx.miniapp.api.WxMaService;
import cn.binarywang.wx.miniapp.api.impl.WxMaServiceImpl;
import cn.binarywang.wx.miniapp.bean.WxMaMessage;
import cn.binarywang.wx.miniapp.bean.WxMaSubscribeMessage;
import cn.binarywang.wx.miniapp.bean.WxMaSubscribeMsgEvent;
import cn.binarywang.wx.miniapp.config.impl.WxMaDefaultConfigImpl;
import cn.binarywang.wx.miniapp.util.crypt.WxMaCryptUtils;
import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import me.chanjar.weixin.common.bean.subscribemsg.PubTemplateKeyword;
import me.chanjar.weixin.common.bean.subscribemsg.TemplateInfo;
import me.chanjar.weixin.common.error.WxErrorException;
import me.chanjar.weixin.common.util.crypto.SHA1;

/**
 * The WxJava (weixin-java-miniapp 4.7.0) probe: tests/interop drives it one JSON line per
 * operation on stdin and reads one JSON line per answer on stdout. It calls only the SDK's
 * public API, pointed at the sandbox the way docs/sandbox.md tells shops to (setApiHostUrl).
 */
public final class Probe {
  private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().serializeNulls().create();

  private WxMaDefaultConfigImpl config;
  private WxMaService service;

  public static void main(String[] args) throws Exception {
    Probe probe = new Probe();
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    String line;
    while ((line = in.readLine()) != null) {
      Map<String, Object> answer;
      try {
        answer = probe.handle(JsonParser.parseString(line).getAsJsonObject());
      } catch (WxErrorException e) {
        answer = new LinkedHashMap<>();
        answer.put("ok", false);
        answer.put("errcode", e.getError().getErrorCode());
        // WxJava puts its Chinese gloss in errorMsg and WeChat's own errmsg in errorMsgEn
        String en = e.getError().getErrorMsgEn();
        answer.put("error", en != null ? en : e.getError().getErrorMsg());
      } catch (Exception e) {
        answer = new LinkedHashMap<>();
        answer.put("ok", false);
        answer.put("error", e.toString());
      }
      out.println(GSON.toJson(answer));
    }
  }

  private static String str(JsonObject r, String key) {
    JsonElement e = r.get(key);
    return e == null || e.isJsonNull() ? null : e.getAsString();
  }

  private static Map<String, Object> ok() {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("ok", true);
    return out;
  }

  private Map<String, Object> handle(JsonObject r) throws WxErrorException {
    String op = str(r, "op");
    if ("config".equals(op)) {
      config = new WxMaDefaultConfigImpl();
      config.setAppid(str(r, "appid"));
      config.setSecret(str(r, "secret"));
      config.setToken(str(r, "token"));
      config.setAesKey(str(r, "aes_key"));
      config.setApiHostUrl(str(r, "base")); // every https://api.weixin.qq.com URL, tokens too
      config.useStableAccessToken(r.has("stable") && r.get("stable").getAsBoolean());
      WxMaServiceImpl impl = new WxMaServiceImpl();
      impl.setWxMaConfig(config);
      impl.setRetrySleepMillis(10); // its -1 backoff (1, 2, 4, 8, 16 s) made short
      service = impl;
      Map<String, Object> out = ok();
      out.put("sdk", "weixin-java-miniapp 4.7.0");
      return out;
    }
    if (service == null) {
      throw new IllegalStateException("config first");
    }
    switch (op) {
      case "token": {
        Map<String, Object> out = ok();
        out.put("token", service.getAccessToken());
        return out;
      }
      case "force_token": {
        Map<String, Object> out = ok();
        out.put("token", service.getAccessToken(true));
        return out;
      }
      case "send": {
        WxMaSubscribeMessage msg = new WxMaSubscribeMessage();
        msg.setToUser(str(r, "touser"));
        msg.setTemplateId(str(r, "template_id"));
        msg.setPage(str(r, "page"));
        if (r.has("miniprogram_state")) {
          msg.setMiniprogramState(str(r, "miniprogram_state"));
        }
        if (r.has("lang")) {
          msg.setLang(str(r, "lang"));
        }
        for (Map.Entry<String, JsonElement> e : r.getAsJsonObject("data").entrySet()) {
          msg.addData(new WxMaSubscribeMessage.MsgData(e.getKey(), e.getValue().getAsString()));
        }
        service.getMsgService().sendSubscribeMsg(msg); // WxJava discards the msgid
        return ok();
      }
      case "templates": {
        List<Map<String, Object>> list = new ArrayList<>();
        for (TemplateInfo t : service.getSubscribeService().getTemplateList()) {
          Map<String, Object> item = new LinkedHashMap<>();
          item.put("id", t.getPriTmplId());
          item.put("title", t.getTitle());
          item.put("content", t.getContent());
          item.put("type", t.getType());
          list.add(item);
        }
        Map<String, Object> out = ok();
        out.put("templates", list);
        return out;
      }
      case "pub_keywords": {
        List<Map<String, Object>> list = new ArrayList<>();
        for (PubTemplateKeyword k :
            service.getSubscribeService().getPubTemplateKeyWordsById(str(r, "tid"))) {
          Map<String, Object> item = new LinkedHashMap<>();
          item.put("kid", k.getKid());
          item.put("name", k.getName());
          item.put("example", k.getExample());
          item.put("rule", k.getRule());
          list.add(item);
        }
        Map<String, Object> out = ok();
        out.put("keywords", list);
        return out;
      }
      case "add_template": {
        List<Integer> kids = new ArrayList<>();
        for (JsonElement e : r.getAsJsonArray("kids")) {
          kids.add(e.getAsInt());
        }
        Map<String, Object> out = ok();
        out.put(
            "template_id",
            service.getSubscribeService().addTemplate(str(r, "tid"), kids, str(r, "scene")));
        return out;
      }
      case "del_template": {
        // true, or a WxErrorException with WeChat's errcode
        service.getSubscribeService().delTemplate(str(r, "template_id"));
        return ok();
      }
      case "encrypt": {
        // a message-push body encrypted and signed the way WeChat does it
        WxMaCryptUtils crypt = new WxMaCryptUtils(config);
        WxMaCryptUtils.EncryptContext ctx = crypt.encryptContext(str(r, "message"));
        Map<String, Object> out = ok();
        out.put("encrypt", ctx.getEncrypt());
        out.put("timestamp", ctx.getTimeStamp());
        out.put("nonce", ctx.getNonce());
        out.put("msg_signature", ctx.getSignature());
        out.put("signature", SHA1.gen(config.getToken(), ctx.getTimeStamp(), ctx.getNonce()));
        return out;
      }
      case "decrypt": {
        // a push the sandbox sent, read the way a WxJava shop server reads it
        WxMaMessage m =
            WxMaMessage.fromEncryptedXml(
                str(r, "body"),
                config,
                str(r, "timestamp"),
                str(r, "nonce"),
                str(r, "msg_signature"));
        Map<String, Object> out = ok();
        out.put("to_user", m.getToUser());
        out.put("from_user", m.getFromUser());
        out.put("event", m.getEvent());
        List<Map<String, Object>> items = new ArrayList<>();
        if (m.getSubscribeMsgPopupEvent() != null) {
          for (WxMaSubscribeMsgEvent.PopupEvent e : m.getSubscribeMsgPopupEvent().getList()) {
            items.add(Map.of("template_id", e.getTemplateId(), "status", e.getSubscribeStatusString()));
          }
        }
        if (m.getSubscribeMsgChangeEvent() != null) {
          for (WxMaSubscribeMsgEvent.ChangeEvent e : m.getSubscribeMsgChangeEvent().getList()) {
            items.add(Map.of("template_id", e.getTemplateId(), "status", e.getSubscribeStatusString()));
          }
        }
        if (m.getSubscribeMsgSentEvent() != null) {
          WxMaSubscribeMsgEvent.SentEvent e = m.getSubscribeMsgSentEvent().getList();
          items.add(Map.of("template_id", e.getTemplateId(), "msgid", e.getMsgId(), "errcode", e.getErrorCode()));
        }
        out.put("items", items);
        return out;
      }
      default:
        throw new IllegalArgumentException("unknown op " + op);
    }
  }
}
