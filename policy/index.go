package policy

// prefixNode indexes a tool's http rules by the literal segments their
// pattern starts with, so a call evaluates only the rules whose leading
// literals it shares instead of every rule of the scope.
type prefixNode struct {
	// rules are indices into toolGrants.http, ascending, of the rules
	// whose leading literals end at this node.
	rules []int
	next  map[string]*prefixNode
}

// buildIndex indexes rules by their leading literal segments.
func buildIndex(rules []httpRule) *prefixNode {
	root := &prefixNode{}
	for i := range rules {
		p := rules[i].path
		if p == nil {
			p = rules[i].shape
		}
		n := root
		for _, s := range p.segs {
			if s.kind != segLiteral {
				break
			}
			child := n.next[s.lit]
			if child == nil {
				if n.next == nil {
					n.next = map[string]*prefixNode{}
				}
				child = &prefixNode{}
				n.next[s.lit] = child
			}
			n = child
		}
		n.rules = append(n.rules, i)
	}
	return root
}

// first returns the index of the first rule, in config order, that allows
// the method bit on segs without a person's approval, or -1; and if there
// is none, the first rule with approve: true that allows it, or -1. It
// does not allocate.
func (tg *toolGrants) first(bit uint8, segs []string) (plain, approve int) {
	plain, approve = -1, -1
	n := tg.index
	for depth := 0; n != nil; depth++ {
		for _, ri := range n.rules {
			if plain >= 0 && ri > plain {
				break
			}
			r := &tg.http[ri]
			if !r.allows(bit, segs) {
				continue
			}
			if !r.approve {
				plain = ri
				break
			}
			if approve < 0 || ri < approve {
				approve = ri
			}
		}
		if depth == len(segs) {
			break
		}
		n = n.next[segs[depth]]
	}
	if plain >= 0 {
		approve = -1
	}
	return plain, approve
}

// allows reports whether the rule grants the method bit on segs.
func (r *httpRule) allows(bit uint8, segs []string) bool {
	return r.methods&bit != 0 &&
		(r.shape == nil || r.shape.match(segs)) &&
		(r.path == nil || r.path.match(segs))
}
