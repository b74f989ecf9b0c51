-- AlterTable
ALTER TABLE "GraphMetadata" ADD COLUMN     "isFeatured" BOOLEAN NOT NULL DEFAULT false;
