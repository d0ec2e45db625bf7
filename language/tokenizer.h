/* The text tokenizer: loads a HuggingFace `tokenizer.json` and reproduces HF `tokenizers` exactly
 * (ids, decoded text). Two kinds, picked at load from the file's pre_tokenizer and decoder, behind
 * this one interface: the LLaMA / SentencePiece kind IDEFICS uses (no pre-tokenizer, byte
 * fallback), and the byte-level kind of Llama 3 / mllama (regex pre-tokenizer, ByteLevel).
 *
 * Supported (anything else fails at load with a message naming the feature):
 *  - model: BPE with `merges` ("a b" strings or ["a","b"] pairs; rank = position), `byte_fallback`
 *    (`<0xNN>` tokens), `fuse_unk`, `unk_token`, `ignore_merges`; `dropout` null or 0;
 *    no `continuing_subword_prefix` / `end_of_word_suffix`.
 *  - normalizer: null, Prepend, Replace (String pattern), or a Sequence of those.
 *  - pre_tokenizer: null, or Sequence[Split(Regex, Isolated, invert false), ByteLevel(
 *    add_prefix_space false, use_regex false)] (Llama 3): the regex runs in PCRE2 (UTF + UCP, JIT)
 *    with `\s`, `\p{L}`, `\p{N}` widened to what HF's Oniguruma matches; each piece's bytes are
 *    spelt in GPT-2's byte characters ("Ġ" for space) and BPE'd on its own. Token strings
 *    (eg_tokenizer_token / _find) are then in that spelling.
 *  - added_tokens: special or not, with lstrip / rstrip / single_word / normalized. They are split
 *    out of the raw input before normalization (normalized=true ones out of each normalized
 *    segment, matched against their normalized form); each text segment between them is
 *    normalized (so it gets its own Prepend "▁") and BPE'd on its own, as HF does. single_word
 *    uses Unicode \w like HF for ASCII, an approximation of it for other scripts.
 *  - post_processor: null or TemplateProcessing whose single template is `[<bos>] $A`, alone or in
 *    a Sequence with ByteLevel (which only trims offsets). It is not interpreted: encode takes an
 *    `add_bos` flag; the template only names the BOS token.
 *  - decoder: Replace(String)* ByteFallback? [Fuse [Strip(c, start, stop=0)]]
 *    (a single decoder or a Sequence) - the LLaMA chain is Replace("▁"→" "), ByteFallback, Fuse,
 *    Strip(" ", 1, 0). Or ByteLevel alone (with the ByteLevel pre_tokenizer): tokens become the
 *    bytes their characters stand for, and the joined bytes are read as UTF-8 with one U+FFFD
 *    per maximal invalid subsequence (Rust's from_utf8_lossy, as HF).
 *  - truncation and padding must be null (they would change single-text output).
 *
 * Encoding is O(n log n) in the text length (heap-driven merges over a linked list of symbols).
 * A loaded tokenizer is immutable: every function taking `const EgTokenizer *` may run on many
 * threads at once. Ids are int32; vocab_size = largest id + 1 (model vocab and added tokens);
 * an id with no token (a gap) decodes to nothing, as in HF. */
#ifndef EGRET_TOKENIZER_H
#define EGRET_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"

typedef struct EgTokenizer EgTokenizer;

/* Loads tokenizer.json. If a tokenizer_config.json sits in the same folder, its bos/eos/unk/pad
 * token names are read too (pad exists only there; the others have fallbacks, see below). */
EgTokenizer *eg_tokenizer_load(const char *tokenizer_json_path, EgError *err);

/* Same from a buffer (no tokenizer_config.json); source_name only labels error messages. */
EgTokenizer *eg_tokenizer_load_from_memory(const char *json, size_t len, const char *source_name,
                                           EgError *err);

void eg_tokenizer_free(EgTokenizer *tok);

/* Encodes UTF-8 text as HF `tokenizer(text, add_special_tokens=add_bos)` does: special-token
 * strings inside the text (e.g. "<image>") ARE recognised. add_bos prepends the BOS id (error if
 * the tokenizer has none). Invalid UTF-8 fails with "invalid UTF-8 at byte offset N" (the offset
 * is also stored in *bad_offset when that is non-NULL; it is left alone on other errors). On
 * success *ids_out is malloc'd (the caller frees; may be NULL when *n_out is 0). */
int eg_tokenizer_encode_ex(const EgTokenizer *tok, const char *text, size_t len, int add_bos,
                           int32_t **ids_out, size_t *n_out, size_t *bad_offset, EgError *err);
int eg_tokenizer_encode(const EgTokenizer *tok, const char *text, size_t len, int add_bos,
                        int32_t **ids_out, size_t *n_out, EgError *err);
/* The same (without BOS) for text that mixes markup with a user's plain text: plain[i] is 1 where
 * byte i is plain text, 0 where it is markup (plain NULL: all markup, as eg_tokenizer_encode).
 * A special added token is recognised only where it covers no plain byte, so plain text is
 * tokenized as the characters it spells ("<image>" typed by a user is "<", "image", ">"); added
 * tokens not marked special are ordinary vocabulary and still match. A segment between markup
 * tokens that holds plain text gets no special token matched after normalization either. */
int eg_tokenizer_encode_plain(const EgTokenizer *tok, const char *text, size_t len,
                              const uint8_t *plain, int32_t **ids_out, size_t *n_out,
                              EgError *err);

/* Full decode as HF `decode(ids, skip_special_tokens)`: all tokens (added ones included) go
 * through the decoder chain, so e.g. the Strip decoder removes one leading space of the whole
 * text. A run of byte tokens that is not valid UTF-8 becomes one U+FFFD per byte (HF's rule).
 * Returns a malloc'd NUL-terminated string (the text may itself contain NUL bytes if ids encode
 * U+0000; *len_out, when non-NULL, gets the true length). */
char *eg_tokenizer_decode(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          EgError *err);
char *eg_tokenizer_decode_ex(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                             size_t *len_out, EgError *err);

/* Token string -> id (added tokens first, then the model vocab), -1 if absent. */
int32_t eg_tokenizer_find(const EgTokenizer *tok, const char *token);
/* Id -> token string as stored in the vocab ("▁the", "<0x0A>", "<image>"); NULL for an id with
 * no token. Valid as long as the tokenizer lives. */
const char *eg_tokenizer_token(const EgTokenizer *tok, int32_t id);
/* Whether id is an added token marked special (skipped by skip_special decoding). */
int eg_tokenizer_is_special(const EgTokenizer *tok, int32_t id);
int eg_tokenizer_vocab_size(const EgTokenizer *tok);

/* Special ids, -1 when the tokenizer has none.
 * bos: the TemplateProcessing special token, else tokenizer_config's bos_token, else "<s>".
 * eos: tokenizer_config's eos_token, else "</s>".  unk: the model's unk_token, else the config's.
 * pad: tokenizer_config's pad_token only. */
int32_t eg_tokenizer_bos(const EgTokenizer *tok);
int32_t eg_tokenizer_eos(const EgTokenizer *tok);
int32_t eg_tokenizer_unk(const EgTokenizer *tok);
int32_t eg_tokenizer_pad(const EgTokenizer *tok);
/* The id tokenizer.json's post-processor (TemplateProcessing) puts before every encoded text, as
 * HF's add_special_tokens=True does: Llama 3's <|begin_of_text|>. -1 when it adds nothing. */
int32_t eg_tokenizer_template_bos(const EgTokenizer *tok);

/* Incremental (streaming) decoder, one per generated sequence; not thread-safe itself.
 * Feed one id at a time; each push yields the text that id completed: a byte-fallback token that
 * ends mid UTF-8 sequence yields "" until the sequence completes, and the Strip decoder's leading
 * strip applies only at the very start of the stream. For ids whose byte runs are valid UTF-8
 * (everything encode produces, and what a model normally emits) the concatenation of all pieces
 * equals eg_tokenizer_decode of all ids. The one divergence: HF turns a WHOLE byte run into
 * U+FFFD per byte as soon as any byte of it is invalid; a stream cannot take back characters it
 * already emitted, so it emits completed characters and U+FFFD only for the bad bytes. With the
 * ByteLevel decoder there is no divergence: HF's rule is itself byte by byte, so the pieces
 * always concatenate to eg_tokenizer_decode, and a piece never holds half a character. */
typedef struct EgDecodeStream EgDecodeStream;

EgDecodeStream *eg_decode_stream_new(const EgTokenizer *tok, int skip_special);
/* Sets *out to a malloc'd NUL-terminated string (possibly ""), the caller frees it. 0 / -1.
 * The _ex form also gives the length (the text holds a NUL byte only if the ids spell U+0000). */
int eg_decode_stream_push(EgDecodeStream *s, int32_t id, char **out, EgError *err);
int eg_decode_stream_push_ex(EgDecodeStream *s, int32_t id, char **out, size_t *len_out,
                             EgError *err);
/* At the end of a sequence: emits U+FFFD for each byte of an unfinished UTF-8 sequence (as the
 * full decode would), then resets the pending bytes. *out (and *len_out) as for push. */
int eg_decode_stream_flush(EgDecodeStream *s, char **out, EgError *err);
int eg_decode_stream_flush_ex(EgDecodeStream *s, char **out, size_t *len_out, EgError *err);
void eg_decode_stream_free(EgDecodeStream *s);

#endif
