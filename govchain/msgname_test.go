package govchain

import "testing"

func TestMsgName(t *testing.T) {
	for _, tc := range []struct {
		body *TxBody
		want string
	}{
		{&TxBody{Msg: &TxBody_ApplyOrg{ApplyOrg: &MsgApplyOrg{}}}, "apply-org"},
		{&TxBody{Msg: &TxBody_RegisterService{RegisterService: &MsgRegisterService{}}}, "register-service"},
		{&TxBody{Msg: &TxBody_ProposeExpelOrg{ProposeExpelOrg: &MsgProposeExpelOrg{}}}, "propose-expel-org"},
		{&TxBody{Msg: &TxBody_TxException{TxException: &MsgTxException{}}}, "tx-exception"},
		{&TxBody{Msg: &TxBody_UpdateService{UpdateService: &MsgUpdateService{}}}, "update-service"},
		{&TxBody{}, "unknown"},
	} {
		if got := MsgName(tc.body); got != tc.want {
			t.Errorf("MsgName = %q, want %q", got, tc.want)
		}
	}
}
