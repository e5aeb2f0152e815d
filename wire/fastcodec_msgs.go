package wire

// Hand-written msgpack for the hot messages (see fastcodec.go). Each
// appendMsgpack writes the set fields in sorted key order, as the codec does;
// each decodeMsgpack switches on the key.

func (m *KeyValue) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.Found, len(m.Key) > 0, len(m.Value) > 0, m.Version != 0))
	if m.Found {
		b = appendBool(appendStr(b, "Found"), true)
	}
	if len(m.Key) > 0 {
		b = appendBin(appendStr(b, "Key"), m.Key)
	}
	if len(m.Value) > 0 {
		b = appendBin(appendStr(b, "Value"), m.Value)
	}
	if m.Version != 0 {
		b = appendUint(appendStr(b, "Version"), m.Version)
	}
	return b
}

func (m *KeyValue) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "Found":
			m.Found, err = d.readBool()
		case "Key":
			m.Key, err = d.readBytes()
		case "Value":
			m.Value, err = d.readBytes()
		case "Version":
			m.Version, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *GetRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Keys) > 0, m.ReadTS != 0))
	if len(m.Keys) > 0 {
		b = appendArrayHeader(appendStr(b, "Keys"), len(m.Keys))
		for _, k := range m.Keys {
			b = appendBin(b, k)
		}
	}
	if m.ReadTS != 0 {
		b = appendUint(appendStr(b, "ReadTS"), m.ReadTS)
	}
	return b
}

func (m *GetRequest) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "Keys":
			m.Keys, err = readList(d, func(p *[]byte) (err error) { *p, err = d.readBytes(); return err })
		case "ReadTS":
			m.ReadTS, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *GetReply) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.ReadTS != 0, len(m.Values) > 0))
	if m.ReadTS != 0 {
		b = appendUint(appendStr(b, "ReadTS"), m.ReadTS)
	}
	if len(m.Values) > 0 {
		b = appendList(appendStr(b, "Values"), m.Values)
	}
	return b
}

func (m *GetReply) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "ReadTS":
			m.ReadTS, err = d.readUint(64)
		case "Values":
			m.Values, err = readStructs[KeyValue](d)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *Op) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Key) > 0, m.Kind != 0, len(m.Value) > 0))
	if len(m.Key) > 0 {
		b = appendBin(appendStr(b, "Key"), m.Key)
	}
	if m.Kind != 0 {
		b = appendUint(appendStr(b, "Kind"), uint64(m.Kind))
	}
	if len(m.Value) > 0 {
		b = appendBin(appendStr(b, "Value"), m.Value)
	}
	return b
}

func (m *Op) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		var v uint64
		switch string(key) {
		case "Key":
			m.Key, err = d.readBytes()
		case "Kind":
			v, err = d.readUint(8)
			m.Kind = OpKind(v)
		case "Value":
			m.Value, err = d.readBytes()
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *Compare) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Key) > 0, m.Kind != 0, len(m.Value) > 0, m.Version != 0))
	if len(m.Key) > 0 {
		b = appendBin(appendStr(b, "Key"), m.Key)
	}
	if m.Kind != 0 {
		b = appendUint(appendStr(b, "Kind"), uint64(m.Kind))
	}
	if len(m.Value) > 0 {
		b = appendBin(appendStr(b, "Value"), m.Value)
	}
	if m.Version != 0 {
		b = appendUint(appendStr(b, "Version"), m.Version)
	}
	return b
}

func (m *Compare) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		var v uint64
		switch string(key) {
		case "Key":
			m.Key, err = d.readBytes()
		case "Kind":
			v, err = d.readUint(8)
			m.Kind = CompareKind(v)
		case "Value":
			m.Value, err = d.readBytes()
		case "Version":
			m.Version, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *TxnRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Compares) > 0, len(m.Ops) > 0))
	if len(m.Compares) > 0 {
		b = appendList(appendStr(b, "Compares"), m.Compares)
	}
	if len(m.Ops) > 0 {
		b = appendList(appendStr(b, "Ops"), m.Ops)
	}
	return b
}

func (m *TxnRequest) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "Compares":
			m.Compares, err = readStructs[Compare](d)
		case "Ops":
			m.Ops, err = readStructs[Op](d)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *TxnReply) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.CommitTS != 0, m.Path != "", m.TxnID != 0))
	if m.CommitTS != 0 {
		b = appendUint(appendStr(b, "CommitTS"), m.CommitTS)
	}
	if m.Path != "" {
		b = appendStr(appendStr(b, "Path"), m.Path)
	}
	if m.TxnID != 0 {
		b = appendUint(appendStr(b, "TxnID"), m.TxnID)
	}
	return b
}

func (m *TxnReply) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "CommitTS":
			m.CommitTS, err = d.readUint(64)
		case "Path":
			m.Path, err = d.readStr()
		case "TxnID":
			m.TxnID, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *ApplyRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Compares) > 0, len(m.Ops) > 0, m.TS != 0, m.TxnID != 0))
	if len(m.Compares) > 0 {
		b = appendList(appendStr(b, "Compares"), m.Compares)
	}
	if len(m.Ops) > 0 {
		b = appendList(appendStr(b, "Ops"), m.Ops)
	}
	if m.TS != 0 {
		b = appendUint(appendStr(b, "TS"), m.TS)
	}
	if m.TxnID != 0 {
		b = appendUint(appendStr(b, "TxnID"), m.TxnID)
	}
	return b
}

func (m *ApplyRequest) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "Compares":
			m.Compares, err = readStructs[Compare](d)
		case "Ops":
			m.Ops, err = readStructs[Op](d)
		case "TS":
			m.TS, err = d.readUint(64)
		case "TxnID":
			m.TxnID, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *ApplyReply) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.CommitTS != 0))
	if m.CommitTS != 0 {
		b = appendUint(appendStr(b, "CommitTS"), m.CommitTS)
	}
	return b
}

func (m *ApplyReply) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		if string(key) != "CommitTS" {
			return errUnknownField
		}
		m.CommitTS, err = d.readUint(64)
		return err
	})
}

func (m *PrepareRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Compares) > 0, len(m.Ops) > 0, len(m.Participants) > 0, m.StartTS != 0, m.TxnID != 0))
	if len(m.Compares) > 0 {
		b = appendList(appendStr(b, "Compares"), m.Compares)
	}
	if len(m.Ops) > 0 {
		b = appendList(appendStr(b, "Ops"), m.Ops)
	}
	if len(m.Participants) > 0 {
		b = appendArrayHeader(appendStr(b, "Participants"), len(m.Participants))
		for _, p := range m.Participants {
			b = appendStr(b, p)
		}
	}
	if m.StartTS != 0 {
		b = appendUint(appendStr(b, "StartTS"), m.StartTS)
	}
	if m.TxnID != 0 {
		b = appendUint(appendStr(b, "TxnID"), m.TxnID)
	}
	return b
}

func (m *PrepareRequest) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "Compares":
			m.Compares, err = readStructs[Compare](d)
		case "Ops":
			m.Ops, err = readStructs[Op](d)
		case "Participants":
			m.Participants, err = readList(d, func(p *string) (err error) { *p, err = d.readStr(); return err })
		case "StartTS":
			m.StartTS, err = d.readUint(64)
		case "TxnID":
			m.TxnID, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *PrepareReply) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.MinCommitTS != 0))
	if m.MinCommitTS != 0 {
		b = appendUint(appendStr(b, "MinCommitTS"), m.MinCommitTS)
	}
	return b
}

func (m *PrepareReply) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		if string(key) != "MinCommitTS" {
			return errUnknownField
		}
		m.MinCommitTS, err = d.readUint(64)
		return err
	})
}

func (m *CommitRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.CommitTS != 0, m.TxnID != 0))
	if m.CommitTS != 0 {
		b = appendUint(appendStr(b, "CommitTS"), m.CommitTS)
	}
	if m.TxnID != 0 {
		b = appendUint(appendStr(b, "TxnID"), m.TxnID)
	}
	return b
}

func (m *CommitRequest) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		switch string(key) {
		case "CommitTS":
			m.CommitTS, err = d.readUint(64)
		case "TxnID":
			m.TxnID, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}

func (m *AbortRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.TxnID != 0))
	if m.TxnID != 0 {
		b = appendUint(appendStr(b, "TxnID"), m.TxnID)
	}
	return b
}

func (m *AbortRequest) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		if string(key) != "TxnID" {
			return errUnknownField
		}
		m.TxnID, err = d.readUint(64)
		return err
	})
}

func (m *Ack) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	return appendMapHeader(b, 0)
}

func (m *Ack) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func([]byte) error { return errUnknownField })
}

// appendMsgpack always writes Commits, which has no omitempty tag.
func (m *SyncRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendStr(appendMapHeader(b, 1), "Commits")
	if m.Commits == nil {
		return append(b, mpNil)
	}
	return appendList(b, m.Commits)
}

func (m *SyncRequest) decodeMsgpack(d *mpDecoder) error { return decodeCommits(d, &m.Commits) }

func (m *CommitBatchRequest) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(len(m.Commits) > 0))
	if len(m.Commits) > 0 {
		b = appendList(appendStr(b, "Commits"), m.Commits)
	}
	return b
}

func (m *CommitBatchRequest) decodeMsgpack(d *mpDecoder) error { return decodeCommits(d, &m.Commits) }

// decodeCommits decodes a body whose only field is Commits, a list of CommitRequest
// (SyncRequest, CommitBatchRequest).
func decodeCommits(d *mpDecoder, commits *[]CommitRequest) error {
	return d.readStruct(func(key []byte) (err error) {
		if string(key) != "Commits" {
			return errUnknownField
		}
		*commits, err = readStructs[CommitRequest](d)
		return err
	})
}

func (m *Error) appendMsgpack(b []byte) []byte {
	if m == nil {
		return append(b, mpNil)
	}
	b = appendMapHeader(b, fields(m.Code != 0, m.Index != 0, m.Message != "", m.TxnID != 0))
	if m.Code != 0 {
		b = appendUint(appendStr(b, "Code"), uint64(m.Code))
	}
	if m.Index != 0 {
		b = appendInt(appendStr(b, "Index"), int64(m.Index))
	}
	if m.Message != "" {
		b = appendStr(appendStr(b, "Message"), m.Message)
	}
	if m.TxnID != 0 {
		b = appendUint(appendStr(b, "TxnID"), m.TxnID)
	}
	return b
}

func (m *Error) decodeMsgpack(d *mpDecoder) error {
	return d.readStruct(func(key []byte) (err error) {
		var v uint64
		switch string(key) {
		case "Code":
			v, err = d.readUint(16)
			m.Code = Code(v)
		case "Index":
			m.Index, err = d.readInt()
		case "Message":
			m.Message, err = d.readStr()
		case "TxnID":
			m.TxnID, err = d.readUint(64)
		default:
			err = errUnknownField
		}
		return err
	})
}
