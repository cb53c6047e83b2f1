package amdp

import (
	"github.com/klauspost/compress/zstd"
)

// zstd block limits from RFC 8878 section 3.1.1.2: no block decompresses
// to more than 128 KiB, and a compressed block is at least 2 bytes.
const (
	zstdMaxBlock        = 128 << 10
	zstdMinCompressed   = 2
	zstdBlockHeaderLen  = 3
	zstdChecksumLen     = 4
	zstdBlockRaw        = 0
	zstdBlockRLE        = 1
	zstdBlockCompressed = 2
)

// zstdBound checks that body is exactly one zstd frame, without a
// dictionary, and returns an upper bound on what it decompresses to, or
// ErrDecompressedTooLarge if that bound exceeds max.
//
// The bound comes from walking the block headers, which costs no
// decompression: a raw or RLE block states its size, and a compressed
// block gives at most 128 KiB. When the frame states its content size, the
// zstd decoder enforces it block by block, so that is the bound; but the
// decoder also allocates that much up front, so a stated size must be
// backed by blocks that could hold it, or a few bytes of header could make
// it allocate MaxDecompressed. Requiring exactly one frame matters: the
// decoder would otherwise go on to decode any frames concatenated after
// the first, each with a fresh budget.
func zstdBound(body []byte, max uint64) (uint64, error) {
	var h zstd.Header
	if err := h.Decode(body); err != nil {
		return 0, invalid("frame.body", ErrBadFrame, "zstd header: "+err.Error())
	}
	switch {
	case h.Skippable:
		return 0, invalid("frame.body", ErrBadFrame, "skippable zstd frame")
	case h.DictionaryID != 0:
		return 0, invalidf("frame.body", ErrBadFrame, "zstd dictionary %d is not used by AMDP", h.DictionaryID)
	case !h.SingleSegment && h.WindowSize > max:
		return 0, invalidf("frame.body", ErrDecompressedTooLarge, "zstd window %d bytes, limit %d", h.WindowSize, max)
	case h.HasFCS && h.FrameContentSize > max:
		return 0, invalidf("frame.body", ErrDecompressedTooLarge, "zstd content size %d bytes, limit %d", h.FrameContentSize, max)
	}
	pos, upper := h.HeaderSize, uint64(0)
	for last := false; !last; {
		if len(body)-pos < zstdBlockHeaderLen {
			return 0, invalid("frame.body", ErrBadFrame, "zstd frame truncated in a block header")
		}
		bh := uint32(body[pos]) | uint32(body[pos+1])<<8 | uint32(body[pos+2])<<16
		pos += zstdBlockHeaderLen
		last = bh&1 == 1
		size := int(bh >> 3)
		var skip int
		switch (bh >> 1) & 3 {
		case zstdBlockRaw:
			skip, upper = size, upper+uint64(size)
		case zstdBlockRLE:
			skip, upper = 1, upper+uint64(size)
		case zstdBlockCompressed:
			if size < zstdMinCompressed {
				return 0, invalidf("frame.body", ErrBadFrame, "zstd compressed block of %d bytes", size)
			}
			skip, upper = size, upper+zstdMaxBlock
		default:
			return 0, invalid("frame.body", ErrBadFrame, "reserved zstd block type")
		}
		if size > zstdMaxBlock {
			return 0, invalidf("frame.body", ErrBadFrame, "zstd block of %d bytes, limit %d", size, zstdMaxBlock)
		}
		if len(body)-pos < skip {
			return 0, invalid("frame.body", ErrBadFrame, "zstd frame truncated in a block")
		}
		pos += skip
	}
	if h.HasCheckSum {
		pos += zstdChecksumLen
	}
	switch {
	case pos > len(body):
		return 0, invalid("frame.body", ErrBadFrame, "zstd frame truncated in its checksum")
	case pos < len(body):
		return 0, invalidf("frame.body", ErrBadFrame, "%d bytes after the zstd frame", len(body)-pos)
	case h.HasFCS && h.FrameContentSize > upper:
		return 0, invalidf("frame.body", ErrBadFrame, "zstd content size %d is more than its blocks can hold (%d)", h.FrameContentSize, upper)
	case h.HasFCS:
		return h.FrameContentSize, nil
	case upper > max:
		return 0, invalidf("frame.body", ErrDecompressedTooLarge, "zstd blocks may hold %d bytes, limit %d", upper, max)
	}
	return upper, nil
}
