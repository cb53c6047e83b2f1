package amdp

// Short names for the generated enum values, which protobuf's naming rules
// make long.
const (
	OpWrite = Operation_OPERATION_WRITE
	OpRead  = Operation_OPERATION_READ

	StatusDelivered = ReceiptStatus_RECEIPT_STATUS_DELIVERED
	StatusRejected  = ReceiptStatus_RECEIPT_STATUS_REJECTED
	StatusFailed    = ReceiptStatus_RECEIPT_STATUS_FAILED
	StatusTimedOut  = ReceiptStatus_RECEIPT_STATUS_TIMED_OUT
)
