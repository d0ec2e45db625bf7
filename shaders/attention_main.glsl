// The body of attention.glsl's shaders (see there): a function named ATTN_MAIN attending for
// batch entry b, reading the keys and values through K_AT / LOAD8_K and V_AT / LOAD8_V,
// included once per slot by attention_slots.comp.
void ATTN_MAIN(uint b) {
    uint q0 = gl_WorkGroupID.x * QPW, head = gl_WorkGroupID.y;
    uint t = gl_LocalInvocationID.x;
    uint hd = p.head_dim;
#if ATTN_TABLE
    BatchEntry ent = batch_entry(p.entry0 + b);
    uint n_keys = ent.n_keys, mode = 0u;
    uint k_off = ent.k_off, k_stride = ent.stride, k_batch = 0u;
    uint v_off = ent.v_off, v_stride = ent.stride, v_batch = 0u;
#else
    uint n_keys = p.n_keys, mode = p.mode;
    uint k_off = p.k_off, k_stride = p.k_stride, k_batch = p.k_batch;
    uint v_off = p.v_off, v_stride = p.v_stride, v_batch = p.v_batch;
#endif
    // Each query's keys [lo, hi) (empty past the last query) and their union; in block-mask
    // mode [lo, hi) spans the query's first to last visible block.
    uint lo[QPW], hi[QPW], qb[QPW];
    uint all_lo = n_keys, all_hi = 0u;
    for (uint i = 0; i < QPW; i++) {
        uint qi = q0 + i;
        lo[i] = 0u;
        hi[i] = qi < p.n_queries ? n_keys : 0u;
        if (mode == 1u) hi[i] = min(hi[i], p.q_pos0 + qi + 1u);
#if !ATTN_TABLE
        if (mode == 2u && qi < p.n_queries) {
            lo[i] = ranges[2u * qi];
            hi[i] = min(ranges[2u * qi + 1u], n_keys);
        }
        if (mode == 3u && qi < p.n_queries) {
            uint first = 0xFFFFFFFFu, last = 0u;
            for (uint w = 0u; w < p.mask_words; w++) {
                uint bits = ranges[(p.q_pos0 + qi) * p.mask_words + w];
                if (bits == 0u) continue;
                if (first == 0xFFFFFFFFu) first = 32u * w + uint(findLSB(bits));
                last = 32u * w + uint(findMSB(bits));
            }
            lo[i] = first == 0xFFFFFFFFu ? 0u : min(first * p.mask_block, n_keys);
            hi[i] = first == 0xFFFFFFFFu ? 0u : min((last + 1u) * p.mask_block, n_keys);
        }
#endif
        if (hi[i] > lo[i]) {
            all_lo = min(all_lo, lo[i]);
            all_hi = max(all_hi, hi[i]);
        }
        qb[i] = p.q_off + b * p.q_batch + min(qi, p.n_queries - 1u) * p.q_stride + head * hd;
    }
    // Grouped-query attention: kv_group consecutive query heads share one key/value head.
    uint kv_head = head / max(p.kv_group, 1u);
    uint kb = k_off + b * k_batch + kv_head * hd;
    uint vb = v_off + b * v_batch + kv_head * hd;
    uint ob = p.o_off + b * p.o_batch + head * hd;
    bool wide = WIDE == 2u || (WIDE == 1u && ((hd | p.q_off | p.q_stride | p.q_batch | k_off |
                                               k_stride | k_batch | v_off | v_stride | v_batch) &
                                              7u) == 0u);
    bool one_subgroup = !MULTI_SUBGROUP || gl_NumSubgroups == 1u;

    for (uint d0 = 0; d0 < hd; d0 += gl_WorkGroupSize.x * DPL) {
        // Finite stand-ins for -inf: drivers may assume shaders never see infinities.
        float run_max[QPW], run_sum[QPW];
        float acc[QPW][DPL];
        for (uint i = 0; i < QPW; i++) {
            run_max[i] = NEG_HUGE;
            run_sum[i] = 0.0;
            for (uint e = 0; e < DPL; e++) acc[i][e] = 0.0;
        }
        for (uint j0 = all_lo; j0 < all_hi; j0 += gl_WorkGroupSize.x) {
            // Keys past the union read its last key instead (masked): every load in bounds.
            uint j = min(j0 + t, all_hi - 1u);
            uint kr = kb + j * k_stride;
            float s[QPW];
            for (uint i = 0; i < QPW; i++) s[i] = 0.0;
            if (wide) {
                for (uint c = 0; c < hd / 8u; c++) {
                    vec4 ka, kb4;
                    LOAD8_K(kr / 8u + c, ka, kb4);
                    for (uint i = 0; i < QPW; i++) {
                        vec4 qa, qb4;
                        LOAD8_Q(qb[i] / 8u + c, qa, qb4);
                        s[i] += dot(qa, ka) + dot(qb4, kb4);
                    }
                }
            } else {
                for (uint d = 0; d < hd; d++) {
                    float kv = K_AT(kr + d);
                    for (uint i = 0; i < QPW; i++) s[i] += Q_AT(qb[i] + d) * kv;
                }
            }
            bool seen[QPW];
            float m[QPW];
            for (uint i = 0; i < QPW; i++) {
                seen[i] = j0 + t >= lo[i] && j0 + t < hi[i];
#if !ATTN_TABLE
                if (mode == 3u && seen[i]) {
                    uint blk = (j0 + t) / p.mask_block;
                    seen[i] = ((ranges[(p.q_pos0 + q0 + i) * p.mask_words + blk / 32u] >> (blk % 32u)) & 1u) != 0u;
                }
#endif
                s[i] = seen[i] ? s[i] * p.scale : NEG_HUGE;
                m[i] = s[i];
            }
            group_reduce(m, true);
            float e[QPW], corr[QPW];
            for (uint i = 0; i < QPW; i++) {
                float new_max = max(run_max[i], m[i]);
                e[i] = seen[i] ? exp(s[i] - new_max) : 0.0;
                corr[i] = exp(run_max[i] - new_max);
                run_max[i] = new_max;
                if (!one_subgroup) probs[i * gl_WorkGroupSize.x + t] = e[i];
            }
            float tsum[QPW];
            for (uint i = 0; i < QPW; i++) tsum[i] = e[i];
            group_reduce(tsum, false);  // its barriers also publish probs[]
            for (uint i = 0; i < QPW; i++) {
                run_sum[i] = run_sum[i] * corr[i] + tsum[i];
                for (uint d = 0; d < DPL; d++) acc[i][d] *= corr[i];
            }
            uint n = min(gl_WorkGroupSize.x, all_hi - j0);
            // Probabilities are broadcast before any lane leaves a loop: the source lane must be
            // active.
            if (wide) {
                for (uint jj = 0; jj < n; jj++) {
                    float pr[QPW];
                    for (uint i = 0; i < QPW; i++)
                        pr[i] = one_subgroup ? subgroupBroadcast(e[i], jj)
                                             : probs[i * gl_WorkGroupSize.x + jj];
                    uint vr = (vb + (j0 + jj) * v_stride) / 8u;
                    for (uint c8 = 0; c8 < DPL / 8u; c8++) {
                        uint c = d0 / 8u + t + gl_WorkGroupSize.x * c8;
                        if (c >= hd / 8u) break;
                        vec4 va, vb4;
                        LOAD8_V(vr + c, va, vb4);
                        for (uint i = 0; i < QPW; i++) {
                            for (uint x = 0; x < 4u; x++) {
                                acc[i][8u * c8 + x] += pr[i] * va[x];
                                acc[i][8u * c8 + 4u + x] += pr[i] * vb4[x];
                            }
                        }
                    }
                }
            } else {
                for (uint jj = 0; jj < n; jj++) {
                    float pr[QPW];
                    for (uint i = 0; i < QPW; i++)
                        pr[i] = one_subgroup ? subgroupBroadcast(e[i], jj)
                                             : probs[i * gl_WorkGroupSize.x + jj];
                    uint vr = vb + (j0 + jj) * v_stride;
                    for (uint dd = 0; dd < DPL; dd++) {
                        uint d = d0 + t + gl_WorkGroupSize.x * dd;
                        if (d >= hd) break;
                        float vv = V_AT(vr + d);
                        for (uint i = 0; i < QPW; i++) acc[i][dd] += pr[i] * vv;
                    }
                }
            }
            if (!one_subgroup) barrier();  // probs[] is rewritten by the next tile
        }
        for (uint i = 0; i < QPW; i++) {
            uint qi = q0 + i;
            if (qi >= p.n_queries) break;
            uint orow = ob + qi * p.o_stride;
            // An empty range: exactly zero (acc and run_sum are both 0 there).
            bool any = hi[i] > lo[i];
            if (wide) {
                for (uint c8 = 0; c8 < DPL / 8u; c8++) {
                    uint c = d0 / 8u + t + gl_WorkGroupSize.x * c8;
                    if (c >= hd / 8u) break;
                    for (uint x = 0; x < 8u; x++) o[orow + 8u * c + x] = ACT(any ? acc[i][8u * c8 + x] / run_sum[i] : 0.0);
                }
            } else {
                for (uint dd = 0; dd < DPL; dd++) {
                    uint d = d0 + t + gl_WorkGroupSize.x * dd;
                    if (d >= hd) break;
                    o[orow + d] = ACT(any ? acc[i][dd] / run_sum[i] : 0.0);
                }
            }
        }
    }
}
