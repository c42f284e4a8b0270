// The silenceper/wechat probe: tests/interop drives it one JSON line per operation on stdin
// and reads one JSON line per answer on stdout. It only calls the SDK's public API, pointed at
// the sandbox the way docs/sandbox.md tells shops to (util.SetURIModifier).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/miniprogram"
	"github.com/silenceper/wechat/v2/miniprogram/config"
	"github.com/silenceper/wechat/v2/miniprogram/subscribe"
	"github.com/silenceper/wechat/v2/util"
)

type request struct {
	Op string `json:"op"`
	// config
	Base   string `json:"base"`
	AppID  string `json:"appid"`
	Secret string `json:"secret"`
	Stable bool   `json:"stable"`
	Token  string `json:"token"`
	AESKey string `json:"aes_key"`
	// send
	ToUser     string                     `json:"touser"`
	TemplateID string                     `json:"template_id"`
	Page       string                     `json:"page"`
	State      string                     `json:"miniprogram_state"`
	Lang       string                     `json:"lang"`
	Data       map[string]json.RawMessage `json:"data"`
	// encrypt
	Message string `json:"message"`
	// template library (pub_keywords / add_template / del_template uses template_id)
	TID   string `json:"tid"`
	Kids  []int  `json:"kids"`
	Scene string `json:"scene"`
	// service cards (set_user_notify / get_user_notify)
	OpenID      string `json:"openid"`
	NotifyType  int64  `json:"notify_type"`
	NotifyCode  string `json:"notify_code"`
	ContentJSON string `json:"content_json"`
	CheckJSON   string `json:"check_json"`
	ExtJSON     string `json:"ext_json"`
}

type probe struct {
	mp     *miniprogram.MiniProgram
	req    request // the last config
	stable bool
}

var errcodeInText = regexp.MustCompile(`errcode=(-?\d+)`)

// failure turns an SDK error into {"ok": false, "errcode": n, "error": text}.
func failure(err error) map[string]any {
	out := map[string]any{"ok": false, "error": err.Error()}
	var common *util.CommonError
	if errors.As(err, &common) {
		out["errcode"] = common.ErrCode
	} else if m := errcodeInText.FindStringSubmatch(err.Error()); m != nil {
		code, _ := strconv.ParseInt(m[1], 10, 64)
		out["errcode"] = code
	}
	return out
}

func (p *probe) configure(r request) map[string]any {
	base := strings.TrimRight(r.Base, "/")
	util.SetURIModifier(func(uri string) string {
		return strings.Replace(uri, "https://api.weixin.qq.com", base, 1)
	})
	p.mp = miniprogram.NewMiniProgram(&config.Config{
		AppID:       r.AppID,
		AppSecret:   r.Secret,
		Cache:       cache.NewMemory(),
		UseStableAK: r.Stable,
	})
	p.req, p.stable = r, r.Stable
	return map[string]any{"ok": true, "sdk": "silenceper/wechat v2.1.10"}
}

func (p *probe) handle(r request) map[string]any {
	if r.Op == "config" {
		return p.configure(r)
	}
	if p.mp == nil {
		return map[string]any{"ok": false, "error": "config first"}
	}
	ctx := context.Background()
	switch r.Op {
	case "token":
		token, err := p.mp.GetContext().GetAccessTokenContext(ctx)
		if err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true, "token": token}
	case "force_token":
		handle, ok := p.mp.GetContext().AccessTokenContextHandle.(*credential.StableAccessToken)
		if !ok {
			return map[string]any{"ok": false, "error": "force_refresh needs stable tokens"}
		}
		res, err := handle.GetAccessTokenDirectly(ctx, true)
		if err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true, "token": res.AccessToken, "expires_in": res.ExpiresIn}
	case "send":
		msg := &subscribe.Message{
			ToUser:           r.ToUser,
			TemplateID:       r.TemplateID,
			Page:             r.Page,
			MiniprogramState: r.State,
			Lang:             r.Lang,
			Data:             map[string]*subscribe.DataItem{},
		}
		for name, raw := range r.Data {
			var value any
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.UseNumber() // a number stays the literal it was (the SDK's Value is interface{})
			if err := dec.Decode(&value); err != nil {
				return map[string]any{"ok": false, "error": err.Error()}
			}
			msg.Data[name] = &subscribe.DataItem{Value: value}
		}
		msgid, err := p.mp.GetSubscribe().SendGetMsgID(msg)
		if err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true, "msgid": strconv.FormatInt(msgid, 10)}
	case "templates":
		list, err := p.mp.GetSubscribe().ListTemplates()
		if err != nil {
			return failure(err)
		}
		out := []map[string]any{}
		for _, t := range list.Data {
			enums := map[string][]string{}
			for _, e := range t.KeywordEnumValueList {
				enums[e.KeywordCode] = e.EnumValueList
			}
			out = append(out, map[string]any{
				"id": t.PriTmplID, "title": t.Title, "content": t.Content, "type": t.Type,
				"enums": enums,
			})
		}
		return map[string]any{"ok": true, "templates": out}
	case "pub_keywords":
		res, err := p.mp.GetSubscribe().GetPubTemplateKeywordsByID(r.TID)
		if err != nil {
			return failure(err)
		}
		out := []map[string]any{}
		for _, k := range res.Data {
			out = append(out, map[string]any{
				"kid": k.KID, "name": k.Name, "example": k.Example, "rule": k.Rule,
			})
		}
		return map[string]any{"ok": true, "keywords": out}
	case "add_template":
		id, err := p.mp.GetSubscribe().Add(r.TID, r.Kids, r.Scene)
		if err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true, "template_id": id}
	case "del_template":
		if err := p.mp.GetSubscribe().Delete(r.TemplateID); err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true}
	case "set_user_notifyext":
		err := p.mp.GetSubscribe().SetUserNotifyExt(&subscribe.SetUserNotifyExtRequest{
			OpenID: r.OpenID, NotifyType: r.NotifyType, NotifyCode: r.NotifyCode,
			ExtJSON: r.ExtJSON,
		})
		if err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true}
	case "set_user_notify":
		err := p.mp.GetSubscribe().SetUserNotify(&subscribe.SetUserNotifyRequest{
			OpenID: r.OpenID, NotifyType: r.NotifyType, NotifyCode: r.NotifyCode,
			ContentJSON: r.ContentJSON, CheckJSON: r.CheckJSON,
		})
		if err != nil {
			return failure(err)
		}
		return map[string]any{"ok": true}
	case "get_user_notify":
		res, err := p.mp.GetSubscribe().GetUserNotify(&subscribe.GetUserNotifyRequest{
			OpenID: r.OpenID, NotifyType: r.NotifyType, NotifyCode: r.NotifyCode,
		})
		if err != nil {
			return failure(err)
		}
		info := res.NotifyInfo
		return map[string]any{"ok": true, "notify_info": map[string]any{
			"notify_type": info.NotifyType, "content_json": info.ContentJSON,
			"code_state": info.CodeState, "code_expire_time": info.CodeExpireTime,
		}}
	case "encrypt":
		// a message-push body encrypted and signed the way WeChat does it (util.EncryptMsg)
		random := []byte(util.RandomStr(16))
		encrypted, err := util.EncryptMsg(random, []byte(r.Message), p.req.AppID, p.req.AESKey)
		if err != nil {
			return failure(err)
		}
		timestamp := strconv.FormatInt(util.GetCurrTS(), 10)
		nonce := util.RandomStr(10)
		return map[string]any{
			"ok":            true,
			"encrypt":       string(encrypted),
			"timestamp":     timestamp,
			"nonce":         nonce,
			"signature":     util.Signature(p.req.Token, timestamp, nonce),
			"msg_signature": util.Signature(p.req.Token, timestamp, nonce, string(encrypted)),
		}
	}
	return map[string]any{"ok": false, "error": fmt.Sprintf("unknown op %q", r.Op)}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	p := &probe{}
	for in.Scan() {
		var r request
		var answer map[string]any
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			answer = map[string]any{"ok": false, "error": err.Error()}
		} else {
			answer = p.handle(r)
		}
		if err := out.Encode(answer); err != nil {
			os.Exit(1)
		}
	}
}
