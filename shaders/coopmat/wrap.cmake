# glslangValidator -x writes the SPIR-V words as comma-separated hex without the braces glslc's
# -mfmt=c adds: wraps IN's words in braces into OUT, so shaders/embed.cmake includes either.
file(READ ${IN} words)
file(WRITE ${OUT} "{\n${words}\n}\n")
