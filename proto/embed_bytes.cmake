# Writes the bytes of IN as a C array (eg_descriptor_set, eg_descriptor_set_len) into OUT.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* Generated from ${IN}: the FileDescriptorSet of the served .proto files. */\n"
     "#include <stddef.h>\n"
     "const unsigned char eg_descriptor_set[] = {\n${body}\n};\n"
     "const size_t eg_descriptor_set_len = ${bytes};\n")
