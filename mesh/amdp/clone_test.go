package amdp

import "google.golang.org/protobuf/proto"

func clonePacket(p *Packet) *Packet                    { return proto.Clone(p).(*Packet) }
func cloneBatch(b *Batch) *Batch                       { return proto.Clone(b).(*Batch) }
func cloneReceiptBatch(rb *ReceiptBatch) *ReceiptBatch { return proto.Clone(rb).(*ReceiptBatch) }
