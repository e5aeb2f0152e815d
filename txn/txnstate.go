package txn

import (
	"time"
)

// txnState is the master's memory of a cross-shard transaction. A transaction that is not in
// the map and has no decision record is aborted.
type txnState struct {
	participants []string
	committed    bool   // the decision record is durable
	commitTS     uint64 // with committed
	unknown      bool   // the decision record may or may not be durable: pending until restart
	applied      bool   // every participant acknowledged the commit; forgotten after their sync
	started      time.Time
	done         chan struct{} // closed when every participant acknowledged the commit
	keys         []string      // written and compared keys, while phase 2 is under way
	id           uint64        // the transaction, once phase 2 starts
	acksLeft     int           // participants yet to acknowledge the commit
	acksReceived int           // acknowledgements received, recorded or not
	phase2Start  time.Time
}
