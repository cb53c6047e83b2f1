package govchain

import (
	cmtcrypto "github.com/cometbft/cometbft/api/cometbft/crypto/v1"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
)

func rpcOpts(prove bool) rpcclient.ABCIQueryOptions { return rpcclient.ABCIQueryOptions{Prove: prove} }

func proofOps(v any) *cmtcrypto.ProofOps {
	p, _ := v.(*cmtcrypto.ProofOps)
	return p
}
