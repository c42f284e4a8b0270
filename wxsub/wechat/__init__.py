"""wechat."""
