/* sladd_jpeg: one libjpeg pass that yields both a JPEG's pixels and its DCT coefficients, and a
 * writer of a JPEG from those coefficients after some blocks were replaced (sladd, MIT licence).
 *
 * libjpeg's buffered-image mode reads the whole entropy-coded stream into full-image coefficient
 * arrays; an output pass then makes the pixels from them, and jpeg_read_coefficients() hands the
 * same arrays out afterwards (libjpeg.txt: "Buffered-image mode", "Really raw data"). Without it
 * sladd's lossless writer decodes each file's entropy-coded data twice: once for the pixels, once
 * inside tjTransform. Built by `python -m engine.codecs.coefjpeg build`, loaded with ctypes by
 * engine/codecs/coefjpeg.py. Calls return 0 on success, -1 on an error (message: sl_message) and
 * -2 for a file this helper leaves to the usual path. Any libjpeg warning is an error: the caller
 * then decodes with its strict decoder, which reports what is wrong. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} sl_error;

typedef struct {
  struct jpeg_decompress_struct d;
  sl_error err;
  jvirt_barray_ptr *coefs;
  int started;
} sl_jpeg;

static void sl_error_exit(j_common_ptr cinfo) {
  sl_error *e = (sl_error *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->message);
  longjmp(e->jump, 1);
}

static void sl_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0) {                     /* a warning (corrupt data): fail, as the strict decoder does */
    sl_error *e = (sl_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
  }
}

#ifndef LIBJPEG_TURBO_VERSION
#error "sladd's JPEG helper needs libjpeg-turbo (its pixels must equal TurboJPEG's)"
#endif

#define SL_VERSION 3

/* Checked by the loader: this file's version, libjpeg's API version, the coefficient size. */
int sl_abi(void) { return SL_VERSION * 1000000 + JPEG_LIB_VERSION * 100 + (int)sizeof(JCOEF); }

const char *sl_message(sl_jpeg *h) { return h ? h->err.message : "out of memory"; }

void sl_free(sl_jpeg *h) {
  if (!h) return;
  jpeg_destroy_decompress(&h->d);
  free(h);
}

/* Reads the header and every coefficient. info[0..3]: width, height, components, colour space
 * (J_COLOR_SPACE of the file); info[4 + 4c ..]: h, v sampling, blocks wide, blocks high of
 * component c. Refuses (-2) what the caller does not patch: progressive or arithmetic coding,
 * other than 8-bit, other than 1 or 3 components. */
int sl_open(const unsigned char *data, unsigned long size, sl_jpeg **out, int *info) {
  sl_jpeg *h = (sl_jpeg *)calloc(1, sizeof(sl_jpeg));
  *out = h;
  if (!h) return -1;
  h->d.err = jpeg_std_error(&h->err.pub);
  h->err.pub.error_exit = sl_error_exit;
  h->err.pub.emit_message = sl_emit_message;
  if (setjmp(h->err.jump)) return -1;
  jpeg_create_decompress(&h->d);
  jpeg_mem_src(&h->d, data, size);
  jpeg_read_header(&h->d, TRUE);
  if (h->d.progressive_mode || h->d.arith_code || h->d.data_precision != 8 ||
      (h->d.num_components != 1 && h->d.num_components != 3)) {
    strcpy(h->err.message, "not a baseline 8-bit grayscale or three-component JPEG");
    return -2;
  }
  h->d.buffered_image = TRUE;
  h->d.out_color_space = JCS_RGB;
  h->d.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&h->d);
  h->started = 1;
  while (jpeg_consume_input(&h->d) != JPEG_REACHED_EOI) {
  }
  info[0] = (int)h->d.image_width;
  info[1] = (int)h->d.image_height;
  info[2] = h->d.num_components;
  info[3] = (int)h->d.jpeg_color_space;
  for (int c = 0; c < h->d.num_components; c++) {
    jpeg_component_info *ci = &h->d.comp_info[c];
    info[4 + 4 * c] = ci->h_samp_factor;
    info[5 + 4 * c] = ci->v_samp_factor;
    info[6 + 4 * c] = (int)ci->width_in_blocks;
    info[7 + 4 * c] = (int)ci->height_in_blocks;
  }
  return 0;
}

/* Decodes the pixels (RGB, 3 bytes per pixel, rows of `stride` bytes) from the coefficients,
 * then takes the coefficient arrays. */
int sl_pixels(sl_jpeg *h, unsigned char *rgb, unsigned long stride) {
  if (setjmp(h->err.jump)) return -1;
  jpeg_start_output(&h->d, h->d.input_scan_number);
  while (h->d.output_scanline < h->d.output_height) {
    JSAMPROW rows[16];
    int n = 0;
    for (; n < 16 && h->d.output_scanline + n < h->d.output_height; n++)
      rows[n] = rgb + (unsigned long)(h->d.output_scanline + n) * stride;
    jpeg_read_scanlines(&h->d, rows, n);
  }
  jpeg_finish_output(&h->d);
  h->coefs = jpeg_read_coefficients(&h->d);
  if (!h->coefs) {
    strcpy(h->err.message, "no coefficient arrays");
    return -1;
  }
  return 0;
}

/* The first block of component `c` and the distance between block rows (in blocks), when the
 * array is one contiguous buffer (libjpeg keeps it so while it fits in memory); -1 otherwise. */
int sl_blocks(sl_jpeg *h, int c, JCOEF **base, long *row_blocks) {
  if (!h->coefs || c < 0 || c >= h->d.num_components) return -1;
  if (setjmp(h->err.jump)) return -1;
  jpeg_component_info *ci = &h->d.comp_info[c];
  JDIMENSION rows = ci->height_in_blocks;
  JCOEF *first = NULL;
  long step = 0;
  for (JDIMENSION r = 0; r < rows; r++) {
    JBLOCKARRAY row = (*h->d.mem->access_virt_barray)((j_common_ptr)&h->d, h->coefs[c], r, 1, TRUE);
    JCOEF *p = row[0][0];
    if (r == 0) first = p;
    else if (r == 1) step = (long)(p - first);
    else if (p != first + (long)r * step) {
      strcpy(h->err.message, "coefficient rows are not contiguous");
      return -1;
    }
  }
  if (rows == 1) step = (long)ci->width_in_blocks * DCTSIZE2;
  if (step % DCTSIZE2 || step < (long)ci->width_in_blocks * DCTSIZE2) {
    strcpy(h->err.message, "unexpected coefficient row layout");
    return -1;
  }
  *base = first;
  *row_blocks = step / DCTSIZE2;
  return 0;
}

/* A new JPEG from the (possibly changed) coefficients, with the input's quantisation tables and
 * sampling, libjpeg's standard Huffman tables, no marker but JFIF's (as tjTransform with
 * TJXOPT_COPYNONE writes). `hint`: the expected size (the input's): one buffer of that size is
 * written into, grown by libjpeg only when too small. `*out` is malloc'd: free it with
 * sl_free_buffer. */
int sl_write(sl_jpeg *h, unsigned long hint, unsigned char **out, unsigned long *size) {
  struct jpeg_compress_struct c;
  sl_error err;
  unsigned char *volatile first = (unsigned char *)malloc(hint > 4096 ? hint : 4096);
  memset(&c, 0, sizeof(c));
  *out = first;
  *size = hint > 4096 ? hint : 4096;
  if (!first) {
    strcpy(h->err.message, "out of memory");
    return -1;
  }
  c.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = sl_error_exit;
  err.pub.emit_message = sl_emit_message;
  if (setjmp(err.jump)) {
    memcpy(h->err.message, err.message, sizeof(err.message));
    if (c.dest) (*c.dest->term_destination)(&c);   /* *out: the buffer libjpeg grew into, if any */
    if (*out != first) free(*out);
    jpeg_destroy_compress(&c);
    free(first);
    *out = NULL;
    *size = 0;
    return -1;
  }
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, out, size);
  jpeg_copy_critical_parameters(&h->d, &c);
  if (c.num_components == 1)               /* as tjTransform (transupp): a gray frame is 1x1 */
    c.comp_info[0].h_samp_factor = c.comp_info[0].v_samp_factor = 1;
  jpeg_write_coefficients(&c, h->coefs);
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  if (*out != first) free(first);          /* libjpeg grew it into a buffer of its own */
  return 0;
}

void sl_free_buffer(unsigned char *p) { free(p); }
