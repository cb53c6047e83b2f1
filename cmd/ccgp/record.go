package main

import (
	"encoding/hex"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ccgpmesh/ccgp/govchain"
)

// recordMap renders a state record for people: bytes as hex, enums as short
// lower-case names (ORG_ACTIVE -> "active"), field names as in the .proto.
func recordMap(m proto.Message) map[string]any {
	out := messageMap(m.ProtoReflect())
	if p, ok := m.(*govchain.Proposal); ok {
		var yes, no int
		for _, v := range p.Votes {
			if v.Approve {
				yes++
			} else {
				no++
			}
		}
		out["tally"] = fmt.Sprintf("%d yes, %d no of %d", yes, no, p.Electorate)
	}
	return out
}

func messageMap(m protoreflect.Message) map[string]any {
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			items := make([]any, l.Len())
			for i := range items {
				items[i] = scalar(fd, l.Get(i))
			}
			out[name] = items
		default:
			out[name] = scalar(fd, v)
		}
		return true
	})
	return out
}

func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		return messageMap(v.Message())
	case protoreflect.BytesKind:
		return hex.EncodeToString(v.Bytes())
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(v.Enum())
		if ev == nil {
			return fmt.Sprint(v.Enum())
		}
		return enumName(string(ev.Name()))
	default:
		return v.Interface()
	}
}

// enumName drops the type prefix: ROLE_CROSSCHAIN -> crosschain.
func enumName(s string) string { return govchain.EnumName(s) }
